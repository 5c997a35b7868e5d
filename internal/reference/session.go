package reference

import (
	"fmt"
	"slices"
)

// Session runs a model one token at a time with a key/value cache, the way
// generation does. It is not safe for concurrent use.
type Session struct {
	m     *Model
	pos   int
	cache []kvCache // per layer
	x     []float32
	wk    *work
	buf   layerWeights // lazy mode: the memory layers are read into
}

// NewSession returns an empty session at position 0.
func (m *Model) NewSession() *Session {
	return &Session{m: m, cache: make([]kvCache, m.layerCount()), x: make([]float32, m.hidden), wk: m.newWork()}
}

// Pos returns the number of tokens the session has seen.
func (s *Session) Pos() int { return s.pos }

// Step feeds one token at the next position and returns the logits
// predicting the token after it. The slice is owned by the caller. On an
// error the session is unchanged.
func (s *Session) Step(id int) ([]float32, error) {
	m := s.m
	if err := m.checkIDs([]int{id}); err != nil {
		return nil, err
	}
	if err := m.embedInto([][]float32{s.x}, []int{id}); err != nil {
		return nil, err
	}
	for li := range m.layerCount() {
		L, err := m.layerAt(li, &s.buf)
		if err != nil {
			s.truncate(li)
			return nil, err
		}
		m.layer(L, li, &s.cache[li], s.pos, s.x, s.wk)
	}
	m.finalNorm(s.wk.hn, s.x)
	logits := make([]float32, m.vocab)
	if err := m.head([][]float32{logits}, [][]float32{s.wk.hn}); err != nil {
		s.truncate(m.layerCount())
		return nil, err
	}
	s.pos++
	return logits, nil
}

// truncate drops the current position from the caches of layers below n.
func (s *Session) truncate(n int) {
	kvd := s.m.kvDim()
	for li := range n {
		s.cache[li].keys = s.cache[li].keys[:s.pos*kvd]
		s.cache[li].values = s.cache[li].values[:s.pos*kvd]
	}
}

// Prefill feeds ids in order and returns the logits after the last one.
func (s *Session) Prefill(ids []int) ([]float32, error) {
	if len(ids) == 0 {
		return nil, fmt.Errorf("reference: prefill of no tokens")
	}
	if err := s.m.checkIDs(ids); err != nil {
		return nil, err
	}
	var logits []float32
	for _, id := range ids {
		var err error
		if logits, err = s.Step(id); err != nil {
			return nil, err
		}
	}
	return logits, nil
}

// Argmax returns the index of the largest of logits[:limit] (the first on
// ties); limit <= 0 or beyond the slice means all of it.
func Argmax(logits []float32, limit int) int {
	if limit <= 0 || limit > len(logits) {
		limit = len(logits)
	}
	best := 0
	for i, v := range logits[:limit] {
		if v > logits[best] {
			best = i
		}
	}
	return best
}

// GreedyOptions refine Greedy.
type GreedyOptions struct {
	// EOS ends generation when produced (the EOS token is included).
	EOS []int
	// Limit, if positive, restricts choices to ids below it (for example to
	// mask the padding rows of a vocabulary rounded up).
	Limit int
}

// Greedy feeds prompt to a fresh session and then picks the most likely next
// token n times, stopping after any token in eos. It returns the new tokens.
func (m *Model) Greedy(prompt []int, n int, eos []int) ([]int, error) {
	return m.GreedyWith(prompt, n, GreedyOptions{EOS: eos})
}

// GreedyWith is Greedy with options.
func (m *Model) GreedyWith(prompt []int, n int, opt GreedyOptions) ([]int, error) {
	s := m.NewSession()
	logits, err := s.Prefill(prompt)
	if err != nil {
		return nil, err
	}
	var out []int
	for len(out) < n {
		id := Argmax(logits, opt.Limit)
		out = append(out, id)
		if slices.Contains(opt.EOS, id) || len(out) == n {
			break
		}
		if logits, err = s.Step(id); err != nil {
			return nil, err
		}
	}
	return out, nil
}
