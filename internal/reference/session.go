package reference

import (
	"fmt"
	"math"
	"slices"
)

// Session runs a model one token at a time with a key/value cache, the way
// generation does. It is not safe for concurrent use.
type Session struct {
	m      *Model
	pos    int
	keys   [][]float32 // per layer: pos × kvHeads·headDim, after RoPE
	values [][]float32

	x, hn, q, k, v, attn, proj, g, u []float32
	scores                           []float64
}

// NewSession returns an empty session at position 0.
func (m *Model) NewSession() *Session {
	qd, kvd := m.heads*m.headDim, m.kvHeads*m.headDim
	return &Session{
		m: m, keys: make([][]float32, len(m.layers)), values: make([][]float32, len(m.layers)),
		x: make([]float32, m.hidden), hn: make([]float32, m.hidden), q: make([]float32, qd),
		k: make([]float32, kvd), v: make([]float32, kvd), attn: make([]float32, qd),
		proj: make([]float32, m.hidden), g: make([]float32, m.inter), u: make([]float32, m.inter),
	}
}

// Pos returns the number of tokens the session has seen.
func (s *Session) Pos() int { return s.pos }

// Step feeds one token at the next position and returns the logits
// predicting the token after it. The slice is owned by the caller.
func (s *Session) Step(id int) ([]float32, error) {
	m := s.m
	if err := m.checkIDs([]int{id}); err != nil {
		return nil, err
	}
	h, kvd := m.hidden, m.kvHeads*m.headDim
	copy(s.x, m.embed[id*h:(id+1)*h])
	groups := m.heads / m.kvHeads
	scale := 1 / math.Sqrt(float64(m.headDim))
	n := s.pos + 1
	if cap(s.scores) < n {
		s.scores = make([]float64, n, 2*n)
	}
	scores := s.scores[:n]
	for li, L := range m.layers {
		rmsNorm(s.hn, s.x, L.inNorm, m.eps)
		m.see(L.q, s.hn)
		L.q.apply(s.q, s.hn)
		m.see(L.k, s.hn)
		L.k.apply(s.k, s.hn)
		m.see(L.v, s.hn)
		L.v.apply(s.v, s.hn)
		m.rope(s.q, m.heads, s.pos)
		m.rope(s.k, m.kvHeads, s.pos)
		s.keys[li] = append(s.keys[li], s.k...)
		s.values[li] = append(s.values[li], s.v...)
		keys, values := s.keys[li], s.values[li]
		for head := range m.heads {
			qo, ko := head*m.headDim, (head/groups)*m.headDim
			qv := s.q[qo : qo+m.headDim]
			for j := range n {
				scores[j] = dot(qv, keys[j*kvd+ko:j*kvd+ko+m.headDim]) * scale
			}
			softmax(scores)
			out := s.attn[qo : qo+m.headDim]
			for c := range out {
				var acc float64
				for j := range n {
					acc += scores[j] * float64(values[j*kvd+ko+c])
				}
				out[c] = float32(acc)
			}
		}
		m.see(L.o, s.attn)
		L.o.apply(s.proj, s.attn)
		addTo(s.x, s.proj)
		rmsNorm(s.hn, s.x, L.postNorm, m.eps)
		m.see(L.gate, s.hn)
		L.gate.apply(s.g, s.hn)
		m.see(L.up, s.hn)
		L.up.apply(s.u, s.hn)
		swiglu(s.g, s.u)
		m.see(L.down, s.g)
		L.down.apply(s.proj, s.g)
		addTo(s.x, s.proj)
	}
	s.pos++
	rmsNorm(s.hn, s.x, m.norm, m.eps)
	logits := make([]float32, m.vocab)
	head := linear{w: m.lmHead, out: m.vocab, in: h, name: "lm_head.weight"}
	m.see(head, s.hn)
	head.apply(logits, s.hn)
	return logits, nil
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
