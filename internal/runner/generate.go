package runner

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"time"
)

// Sampling chooses the next token from logits.
type Sampling struct {
	// Temperature 0 is greedy (argmax).
	Temperature float64
	// TopP keeps the smallest set of tokens whose probability reaches TopP
	// (1 or 0 keeps all).
	TopP float64
	// Seed makes sampling reproducible.
	Seed uint64
	// Limit, if > 0, only lets tokens below it be chosen (to skip padding
	// rows of a vocabulary rounded up).
	Limit int
}

// Sampler draws tokens with a fixed random stream.
type Sampler struct {
	s     Sampling
	rng   *rand.Rand
	cands []candidate // reused between tokens
}

// NewSampler returns a sampler for s.
func NewSampler(s Sampling) *Sampler {
	return &Sampler{s: s, rng: rand.New(rand.NewPCG(s.Seed, s.Seed^0x9e3779b97f4a7c15))}
}

// Next picks a token from logits.
func (sm *Sampler) Next(logits []float32) int {
	if sm.s.Limit > 0 && sm.s.Limit < len(logits) {
		logits = logits[:sm.s.Limit]
	}
	if sm.s.Temperature <= 0 {
		return Argmax(logits)
	}
	maxL := math.Inf(-1)
	for _, l := range logits {
		maxL = math.Max(maxL, float64(l))
	}
	cands := sm.cands[:0]
	var sum float64
	for i, l := range logits {
		p := math.Exp((float64(l) - maxL) / sm.s.Temperature)
		if p > 0 {
			cands = append(cands, candidate{i, p})
			sum += p
		}
	}
	sm.cands = cands
	if tp := sm.s.TopP; tp > 0 && tp < 1 {
		// Only nucleus sampling needs the candidates in order.
		sort.Slice(cands, func(i, j int) bool {
			if cands[i].p != cands[j].p {
				return cands[i].p > cands[j].p
			}
			return cands[i].id < cands[j].id
		})
		var acc float64
		for i, c := range cands {
			acc += c.p / sum
			if acc >= tp {
				cands = cands[:i+1]
				break
			}
		}
		sum = 0
		for _, c := range cands {
			sum += c.p
		}
	}
	r := sm.rng.Float64() * sum
	for _, c := range cands {
		r -= c.p
		if r <= 0 {
			return c.id
		}
	}
	return cands[len(cands)-1].id
}

type candidate struct {
	id int
	p  float64
}

// Argmax returns the index of the largest value (the first on ties).
func Argmax(x []float32) int {
	best := 0
	for i, v := range x {
		if v > x[best] {
			best = i
		}
	}
	return best
}

// nextToken runs one decode step and picks the next token: greedily inside
// the model for an argmax head, else with the sampler.
func (m *Model) nextToken(id, pos int, sm *Sampler) (int, error) {
	if m.argmax {
		return m.Greedy(id, pos, sm.s.Limit)
	}
	logits, err := m.Decode(id, pos)
	if err != nil {
		return 0, err
	}
	return sm.Next(logits), nil
}

// GenerateStats reports the speed of a generation.
type GenerateStats struct {
	PromptTokens, NewTokens int
	Prefill, Decode         time.Duration
	// Stop says why generation ended: "eos", "max-tokens", "context" or
	// "caller".
	Stop string
	// StopID is the end-of-generation id that ended it (Stop "eos").
	StopID int
}

// PrefillTokensPerSecond is the prompt throughput.
func (s GenerateStats) PrefillTokensPerSecond() float64 {
	return float64(s.PromptTokens) / s.Prefill.Seconds()
}

// DecodeTokensPerSecond is the generation throughput.
func (s GenerateStats) DecodeTokensPerSecond() float64 {
	return float64(s.NewTokens) / s.Decode.Seconds()
}

// Generate prefills prompt from an empty cache and then generates up to
// maxTokens tokens (0 = until the context is full), calling emit with each
// one; emit returns false to stop. Generation also stops after a token for
// which eos reports true (emitted; chat passes tokenizer.Tokenizer.IsEOS,
// which holds every end-of-generation id of the checkpoint) or when the
// context is full. As in ANEMLL's runners the
// last prompt token is run again in decode mode to get the first logits.
// With ANEMLL 0.3.5's rotate packages this is chat.py's behaviour exactly,
// including its defect: past the window the re-run rotates the window
// cache a second time.
func (m *Model) Generate(prompt []int, maxTokens int, sm *Sampler, eos func(int) bool, emit func(id int) bool) (GenerateStats, error) {
	st := GenerateStats{PromptTokens: len(prompt)}
	if len(prompt) == 0 {
		return st, fmt.Errorf("runner: empty prompt")
	}
	if len(prompt) >= m.ContextLength {
		return st, fmt.Errorf("runner: prompt of %d tokens leaves no room in the %d-token context", len(prompt), m.ContextLength)
	}
	m.Reset()
	start := time.Now()
	if err := m.Prefill(prompt); err != nil {
		return st, err
	}
	st.Prefill = time.Since(start)
	start = time.Now()
	tok, pos := prompt[len(prompt)-1], len(prompt)-1
	if m.argmax && sm.s.Temperature > 0 {
		return st, fmt.Errorf("runner: temperature %g needs full logits, but the LM head returns only its argmax (converted with --argmax); use temperature 0 (greedy) or reconvert without --argmax", sm.s.Temperature)
	}
	for {
		var err error
		tok, err = m.nextToken(tok, pos, sm)
		if err != nil {
			return st, err
		}
		pos++
		st.NewTokens++
		if !emit(tok) {
			st.Stop = "caller"
			break
		}
		if eos != nil && eos(tok) {
			st.Stop, st.StopID = "eos", tok
			break
		}
		if maxTokens > 0 && st.NewTokens >= maxTokens {
			st.Stop = "max-tokens"
			break
		}
		if pos >= m.ContextLength-1 {
			st.Stop = "context"
			break
		}
	}
	st.Decode = time.Since(start)
	return st, nil
}
