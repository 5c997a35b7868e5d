package verify

import (
	"fmt"
	"math"

	"github.com/anemll/anemll/internal/runner"
)

// compareArgmax is compareWant for packages whose LM head returns its
// argmax (ANEMLL 0.3.5's --argmax): at each position the in-model winner is
// compared with the reference's top-1. Top1 is their agreement; KL cannot
// be measured (Argmax is set and the KL fields stay 0); MaxAbsLogit is the
// largest difference between the winning logit the package returns and the
// reference's logit for the same token.
func compareArgmax(m *runner.Model, ids []int, want [][][]float32, prefillPath bool) ([]*Report, error) {
	path := func(step func(t, id int) (int, float32, error)) ([]PathStats, error) {
		stats := make([]PathStats, len(want))
		for t, id := range ids {
			tok, val, err := step(t, id)
			if err != nil {
				return nil, err
			}
			for i := range want {
				s := &stats[i]
				w := want[i][t]
				if tok < 0 || tok >= len(w) {
					return nil, fmt.Errorf("verify: in-model argmax gave token %d, outside the reference's %d logits", tok, len(w))
				}
				s.Positions++
				s.Argmax = true
				s.top1(t, w, tok)
				if d := math.Abs(float64(val) - float64(w[tok])); d > s.MaxAbsLogit || math.IsNaN(d) {
					s.MaxAbsLogit = d
				}
			}
		}
		for i := range stats {
			if stats[i].Positions > 0 {
				stats[i].Top1 /= float64(stats[i].Positions)
			}
		}
		return stats, nil
	}
	m.Reset()
	dec, err := path(func(t, id int) (int, float32, error) { return m.Winner(id, t) })
	if err != nil {
		return nil, err
	}
	reps := make([]*Report, len(want))
	for i := range reps {
		reps[i] = &Report{Decode: dec[i]}
	}
	if !prefillPath {
		return reps, nil
	}
	m.Reset()
	if err := m.Prefill(ids); err != nil {
		return nil, err
	}
	snap := m.Snapshot()
	pre, err := path(func(t, id int) (int, float32, error) {
		tok, val, err := m.Winner(id, t)
		m.Restore(snap)
		return tok, val, err
	})
	if err != nil {
		return nil, err
	}
	for i := range reps {
		reps[i].Prefill = pre[i]
	}
	return reps, nil
}
