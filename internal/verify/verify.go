// Package verify checks converted packages against an independent
// reference forward pass of the original checkpoint: per-position top-1
// agreement, KL divergence and logit differences, on the decode path and
// on the prefill path, driven exactly as ANEMLL's runners drive them.
package verify

import (
	"fmt"
	"io"
	"math"

	"github.com/anemll/anemll/internal/reference"
	"github.com/anemll/anemll/internal/runner"
)

// PathStats summarises one path's agreement with the reference.
type PathStats struct {
	Positions int
	// Top1 is the fraction of positions whose argmax matches.
	Top1 float64
	// MeanKL and MaxKL are KL(reference ‖ package) in nats.
	MeanKL, MaxKL float64
	// MaxAbsLogit is the largest |Δlogit| over all positions and tokens.
	MaxAbsLogit float64
	// Misses lists positions whose argmax differs.
	Misses []int
	// Ties lists the misses where the reference scores the packages'
	// choice within TieGap of its own best: a near-tie that fp16 logits
	// cannot resolve, which Check counts as agreement.
	Ties []int
	// Overflow lists positions whose package logits were not finite
	// (an fp16 overflow inside the packages: ±Inf, then NaN after a norm).
	Overflow []int
	// Argmax marks a path measured on an in-model argmax head: Top1 is
	// the agreement of its winner with the reference's top-1, KL is not
	// measured, MaxAbsLogit compares the winning logits.
	Argmax bool
}

// Report holds both paths.
type Report struct {
	Decode, Prefill PathStats
}

// TieGap is the reference logit gap under which a top-1 miss is a tie:
// about the fp16 spacing of logits of magnitude 8–16 (2⁻⁷).
const TieGap = 1.0 / 128

// agreement returns the fraction of positions whose argmax matches or
// is a tie.
func (s PathStats) agreement() float64 {
	if s.Positions == 0 {
		return s.Top1
	}
	return s.Top1 + float64(len(s.Ties))/float64(s.Positions)
}

// Thresholds bound what Check accepts.
type Thresholds struct {
	MaxMeanKL float64
	MinTop1   float64
}

// DefaultThresholds suit fp16 packages (or LUT packages checked against
// their own dequantized weights).
var DefaultThresholds = Thresholds{MaxMeanKL: 1e-3, MinTop1: 0.97}

// Check reports an error if either path is outside t.
func (r *Report) Check(t Thresholds) error {
	for _, p := range []struct {
		name string
		s    PathStats
	}{{"decode", r.Decode}, {"prefill", r.Prefill}} {
		if n := len(p.s.Overflow); n > 0 {
			return fmt.Errorf("verify: %s path: fp16 overflow, %d of %d positions gave non-finite logits (first at %d); convert with --fp16-scale measure or a value such as 0.25", p.name, n, p.s.Positions, p.s.Overflow[0])
		}
		if !p.s.Argmax && p.s.MeanKL > t.MaxMeanKL {
			return fmt.Errorf("verify: %s path mean KL %.3g exceeds %.3g", p.name, p.s.MeanKL, t.MaxMeanKL)
		}
		if a := p.s.agreement(); a < t.MinTop1 {
			ties := ""
			if len(p.s.Ties) > 0 {
				ties = fmt.Sprintf(" (counting %d near-ties as agreement)", len(p.s.Ties))
			}
			return fmt.Errorf("verify: %s path top-1 agreement %.2f%%%s is below %.2f%%", p.name, 100*a, ties, 100*t.MinTop1)
		}
	}
	return nil
}

// Write prints the report as two table rows.
func (r *Report) Write(w io.Writer) {
	fmt.Fprintf(w, "%-8s %9s %8s %11s %11s %12s\n", "path", "positions", "top-1", "mean KL", "max KL", "max |Δlogit|")
	for _, p := range []struct {
		name string
		s    PathStats
	}{{"decode", r.Decode}, {"prefill", r.Prefill}} {
		if p.s.Positions == 0 {
			continue
		}
		if p.s.Argmax {
			fmt.Fprintf(w, "%-8s %9d %7.2f%% %11s %11s %12.4g  (in-model argmax vs reference top-1)\n", p.name, p.s.Positions, 100*p.s.Top1, "n/a", "n/a", p.s.MaxAbsLogit)
			continue
		}
		fmt.Fprintf(w, "%-8s %9d %7.2f%% %11.3g %11.3g %12.4g\n", p.name, p.s.Positions, 100*p.s.Top1, p.s.MeanKL, p.s.MaxKL, p.s.MaxAbsLogit)
	}
	for _, p := range []struct {
		name string
		s    PathStats
	}{{"decode", r.Decode}, {"prefill", r.Prefill}} {
		if len(p.s.Misses) == 0 {
			continue
		}
		shown := p.s.Misses[:min(len(p.s.Misses), 20)]
		more := ""
		if len(p.s.Misses) > len(shown) {
			more = fmt.Sprintf(" (+%d more)", len(p.s.Misses)-len(shown))
		}
		ties := ""
		if n := len(p.s.Ties); n > 0 {
			ties = fmt.Sprintf("; near-ties among them (the reference's own gap under %.3g): %d", TieGap, n)
		}
		fmt.Fprintf(w, "%s top-1 misses at positions %v%s%s\n", p.name, shown, more, ties)
	}
	for _, p := range []struct {
		name string
		s    PathStats
	}{{"decode", r.Decode}, {"prefill", r.Prefill}} {
		if n := len(p.s.Overflow); n > 0 {
			fmt.Fprintf(w, "%s: fp16 overflow in the packages at %d positions (first %d): logits not finite\n", p.name, n, p.s.Overflow[0])
		}
	}
}

// Compare runs ids through the packages and the reference. The decode path
// feeds tokens one by one through the decode functions from an empty
// cache. The prefill path fills the cache with the prefill functions, then
// for each position t runs the decode step for token t on that cache (the
// runner's first step after a prompt of t+1 tokens), restoring the
// prefilled cache after each step.
func Compare(m *runner.Model, ref *reference.Model, ids []int) (*Report, error) {
	return compare(m, ref, ids, true)
}

// CompareDecode is Compare for the decode path only (Prefill stays empty).
func CompareDecode(m *runner.Model, ref *reference.Model, ids []int) (*Report, error) {
	return compare(m, ref, ids, false)
}

func compare(m *runner.Model, ref *reference.Model, ids []int, prefillPath bool) (*Report, error) {
	reps, err := compareMany(m, []*reference.Model{ref}, ids, prefillPath)
	if err != nil {
		return nil, err
	}
	return reps[0], nil
}

// CompareMany is Compare against several references at once (for example
// the checkpoint's weights and the packages' own), running the packages
// only once; it returns one report per reference.
func CompareMany(m *runner.Model, refs []*reference.Model, ids []int) ([]*Report, error) {
	return compareMany(m, refs, ids, true)
}

func compareMany(m *runner.Model, refs []*reference.Model, ids []int, prefillPath bool) ([]*Report, error) {
	if len(ids) == 0 {
		return nil, fmt.Errorf("verify: no tokens")
	}
	if len(ids) > m.ContextLength {
		return nil, fmt.Errorf("verify: %d tokens exceed the packages' context length %d", len(ids), m.ContextLength)
	}
	want := make([][][]float32, len(refs))
	for i, ref := range refs {
		var err error
		if want[i], err = ref.Forward(ids); err != nil {
			return nil, err
		}
	}
	return compareWant(m, ids, want, prefillPath)
}

// CompareLogits is Compare against precomputed reference logits: want[t]
// are the logits predicting token t+1 after ids[:t+1] (for example Hugging
// Face's own, saved with a checkpoint).
func CompareLogits(m *runner.Model, ids []int, want [][]float32) (*Report, error) {
	if len(want) != len(ids) {
		return nil, fmt.Errorf("verify: %d rows of reference logits for %d tokens", len(want), len(ids))
	}
	if len(ids) > m.ContextLength {
		return nil, fmt.Errorf("verify: %d tokens exceed the packages' context length %d", len(ids), m.ContextLength)
	}
	reps, err := compareWant(m, ids, [][][]float32{want}, true)
	if err != nil {
		return nil, err
	}
	return reps[0], nil
}

// compareWant runs the packages over ids on the decode path (and the
// prefill path when prefillPath) and compares them with each entry of want.
func compareWant(m *runner.Model, ids []int, want [][][]float32, prefillPath bool) ([]*Report, error) {
	return compareWantProgress(m, ids, want, prefillPath, nil)
}

// compareWantProgress is compareWant calling progress (if set) after each
// position of each path with the positions done and their total.
func compareWantProgress(m *runner.Model, ids []int, want [][][]float32, prefillPath bool, progress func(done, total int)) ([]*Report, error) {
	if m.InModelArgmax() {
		return compareArgmax(m, ids, want, prefillPath)
	}
	total, done := len(ids), 0
	if prefillPath {
		total *= 2
	}
	// path runs the packages over ids and adds each position's logits to
	// one accumulator per reference.
	path := func(step func(t, id int) ([]float32, error)) ([]PathStats, error) {
		accs := make([]*accumulator, len(want))
		for i := range accs {
			accs[i] = newAccumulator()
		}
		for t, id := range ids {
			got, err := step(t, id)
			if err != nil {
				return nil, err
			}
			if done++; progress != nil {
				progress(done, total)
			}
			if got == nil {
				continue // position not measured on this path
			}
			for i, a := range accs {
				if err := a.add(t, want[i][t], got); err != nil {
					return nil, err
				}
			}
		}
		stats := make([]PathStats, len(accs))
		for i, a := range accs {
			stats[i] = a.stats()
		}
		return stats, nil
	}
	m.Reset()
	dec, err := path(func(t, id int) ([]float32, error) { return m.Decode(id, t) })
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
	var pre []PathStats
	if m.HasRotate() {
		// Packages with rotating window caches (ANEMLL 0.3.5's Gemma 3):
		// a cache prefilled past position t no longer holds what a prompt
		// of t+1 tokens leaves, so the prefill path is what a chat does:
		// prefill the first half of ids as the prompt, re-run its last
		// token in decode (as ANEMLL's runners do) and predict the rest.
		p := max(1, len(ids)/2)
		m.Reset()
		if err := m.Prefill(ids[:p]); err != nil {
			return nil, err
		}
		stats, err := path(func(t, id int) ([]float32, error) {
			if t < p-1 {
				return nil, nil
			}
			return m.Decode(id, t)
		})
		if err != nil {
			return nil, err
		}
		pre = stats
	} else {
		m.Reset()
		if err := m.Prefill(ids); err != nil {
			return nil, err
		}
		snap := m.Snapshot()
		stats, err := path(func(t, id int) ([]float32, error) {
			got, err := m.Decode(id, t)
			m.Restore(snap)
			return got, err
		})
		if err != nil {
			return nil, err
		}
		pre = stats
	}
	for i := range reps {
		reps[i].Prefill = pre[i]
	}
	return reps, nil
}

type accumulator struct {
	s     PathStats
	klSum float64
}

func newAccumulator() *accumulator { return &accumulator{} }

func (a *accumulator) add(pos int, want, got []float32) error {
	if len(got) < len(want) {
		return fmt.Errorf("verify: packages give %d logits, the reference %d: is --model the checkpoint they were converted from?", len(got), len(want))
	}
	got = got[:len(want)]
	for _, v := range got {
		if math.IsInf(float64(v), 0) && v > 0 || math.IsNaN(float64(v)) {
			a.s.Overflow = append(a.s.Overflow, pos)
			break
		}
	}
	kl, maxAbs := KL(want, got)
	a.s.Positions++
	a.klSum += kl
	a.s.MaxKL = math.Max(a.s.MaxKL, kl)
	a.s.MaxAbsLogit = math.Max(a.s.MaxAbsLogit, maxAbs)
	a.s.top1(pos, want, runner.Argmax(got))
	return nil
}

// top1 counts position pos: the packages chose token got where the
// reference's logits are want.
func (s *PathStats) top1(pos int, want []float32, got int) {
	best := runner.Argmax(want)
	switch {
	case best == got:
		s.Top1++
	case float64(want[best])-float64(want[got]) < TieGap:
		s.Misses = append(s.Misses, pos)
		s.Ties = append(s.Ties, pos)
	default:
		s.Misses = append(s.Misses, pos)
	}
}

func (a *accumulator) stats() PathStats {
	s := a.s
	if s.Positions > 0 {
		s.Top1 /= float64(s.Positions)
		s.MeanKL = a.klSum / float64(s.Positions)
	}
	return s
}

// KL returns KL(softmax(p) ‖ softmax(q)) in float64 and max |p−q|.
func KL(p, q []float32) (kl, maxAbs float64) {
	lp, lq := logSoftmax(p), logSoftmax(q)
	for i := range lp {
		if pi := math.Exp(lp[i]); pi > 0 {
			kl += pi * (lp[i] - lq[i])
		}
		if d := math.Abs(float64(p[i]) - float64(q[i])); d > maxAbs || math.IsNaN(d) {
			maxAbs = d
		}
	}
	return kl, maxAbs
}

func logSoftmax(x []float32) []float64 {
	m := math.Inf(-1)
	for _, v := range x {
		m = math.Max(m, float64(v))
	}
	var s float64
	for _, v := range x {
		s += math.Exp(float64(v) - m)
	}
	ls := m + math.Log(s)
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = float64(v) - ls
	}
	return out
}
