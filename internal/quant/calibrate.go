package quant

import (
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/anemll/anemll/internal/fp16"
)

// This file holds output-aware (calibrated) palettization. A weight W
// [rows, in] feeding a linear layer with inputs X [tokens, in] produces
// W·xᵀ; the error of that output over the calibration tokens is
//
//	tr((W−Ŵ) H (W−Ŵ)ᵀ),  H = XᵀX,
//
// a sum over rows, so groups of rows (one LUT each) are independent given H.
// Each group's palette starts from k-means weighted by diag H; indices are
// then assigned column by column against the fixed palette with the error
// of each column fed back through H onto the columns not yet assigned
// (GPTQ/OBQ) and then improved by exact coordinate descent on each row's
// eᵀHe, and the palette entries are refitted by least squares on H given
// the assignments; this repeats while the group's error falls. The
// uncalibrated palette (Palettize) is a candidate too, so no group, and no
// tensor, is ever worse on H than without calibration.

// Stats are the calibration statistics of one weight's input channels.
type Stats struct {
	// Diag is the diagonal of H = XᵀX, one entry per input channel
	// (the length of one weight row).
	Diag []float64
	// Gram is the full H, len(Diag)² values row-major, or nil when only
	// the diagonal was collected (the error is then Σ diag·e²).
	Gram []float64
	// RowWeight, if set, weights each row's error (len: rows of the
	// weight); a palettized embedding table uses token frequencies here
	// with Diag all ones.
	RowWeight []float64

	once sync.Once
	fb   *feedback // GPTQ factor of Gram, computed once and shared
	fbOK bool
}

// In returns the number of input channels.
func (s *Stats) In() int { return len(s.Diag) }

// Diagonal returns the statistics without the full Gram matrix: the error
// becomes Σ diag·e², which palettization minimises exactly (weighted
// k-means, nearest entries) at about twice the cost of an uncalibrated
// palette (BenchmarkLayer1BCalibratedDiag against BenchmarkLayer1B).
func (s *Stats) Diagonal() *Stats {
	return &Stats{Diag: s.Diag, RowWeight: s.RowWeight}
}

// MaxFullGramWork bounds rows·in² of a weight palettized with the full
// schedule on the full Gram matrix: two starts (H-weighted k-means and the
// uncalibrated palette), each up to maxRounds rounds of error feedback
// through H, coordinate descent on eᵀHe and a palette refit; about fifty
// O(in²) passes per row, a few seconds of one core at this bound (a
// 128×512 weight; the largest weight of the bundled tiny model is
// 128×384).
const MaxFullGramWork = 1 << 25

// MaxLiteGramWork and MaxLiteWidth bound the weights palettized on the full
// Gram matrix with the lite schedule (heavier or wider weights use its
// diagonal, Stats.Diagonal): the H-weighted k-means start alone,
// liteRounds rounds of error feedback and refit, no coordinate descent;
// about seven O(in²) passes per row, so about 7·in multiply-adds per
// weight: a few seconds of one core at the bounds (a 2048×512 weight, the
// MLP projections of a hidden-512 model), and the width bound keeps a
// whole model's cost in proportion (Gemma 3 1B's 256×1152 k_proj would
// fit the work bound, but its 52 such weights would take minutes). On the
// tiny model the lite schedule everywhere gives dev KL 0.0338 at LUT4/LUT6
// against the full schedule's 0.0322 and the diagonal's 0.0433.
const (
	MaxLiteGramWork = 1 << 29
	MaxLiteWidth    = 512
)

// liteRounds bounds the lite schedule's rounds.
const liteRounds = 2

// liteSchedule reports whether a rows×in weight with a full Gram matrix
// takes the lite schedule (above MaxFullGramWork).
func liteSchedule(rows, in int) bool {
	return float64(rows)*float64(in)*float64(in) > MaxFullGramWork
}

// GramAffordable reports whether a rows×in weight is palettized on the
// full Gram matrix (the full or the lite schedule) rather than its
// diagonal.
func GramAffordable(rows, in int) bool {
	work := float64(rows) * float64(in) * float64(in)
	return work <= MaxFullGramWork || in <= MaxLiteWidth && work <= MaxLiteGramWork
}

// Affordable returns st, or its diagonal when a rows×in weight cannot
// afford the full Gram matrix (GramAffordable).
func (s *Stats) Affordable(rows int) *Stats {
	if s.Gram == nil || GramAffordable(rows, s.In()) {
		return s
	}
	return s.Diagonal()
}

// Calibration parameters.
const (
	// dampFraction is the ridge added to H's diagonal for the GPTQ factor,
	// as a fraction of the mean diagonal (as GPTQ does).
	dampFraction = 0.01
	// maxRounds bounds assign/refit rounds per start.
	maxRounds = 4
	// minGain is the relative error decrease a round must bring to go on.
	minGain = 1e-4
)

// CalibReport sums a tensor's errors over its groups.
type CalibReport struct {
	// OutputRef is Σ_r w_r H w_rᵀ, the output energy, for relative errors.
	OutputRef float64
	// Output0 and Output are tr((W−Ŵ)H(W−Ŵ)ᵀ) for the uncalibrated and
	// the calibrated palette.
	Output0, Output float64
	// Weight0 and Weight are Σ(W−Ŵ)² for both palettes.
	Weight0, Weight float64
	// Groups holds each group's calibrated error on H (≤ Groups0 entry by
	// entry); Groups0 the uncalibrated ones.
	Groups, Groups0 []float64
}

// Add accumulates r's totals into t (group lists are not merged).
func (t *CalibReport) Add(r *CalibReport) {
	t.OutputRef += r.OutputRef
	t.Output0 += r.Output0
	t.Output += r.Output
	t.Weight0 += r.Weight0
	t.Weight += r.Weight
}

// h2f widens a half bit pattern to float64.
func h2f(h uint16) float64 { return float64(fp16.Bits(h).Float32()) }

// f2h rounds to the nearest half, with −0 stored as +0.
func f2h(x float64) uint16 {
	h := uint16(fp16.FromFloat64(x))
	if h == 0x8000 {
		h = 0
	}
	return h
}

// PalettizeCalibrated palettizes w like Palettize but chooses each group's
// palette and indices to minimise the output error on st (see the file
// comment). With st nil it is Palettize and the report is nil. The result
// is deterministic and independent of opts.Workers.
func PalettizeCalibrated(w []uint16, shape []int64, st *Stats, opts Options) (*Palette, *CalibReport, error) {
	if st == nil {
		p, err := Palettize(w, shape, opts)
		return p, nil, err
	}
	if err := check(w, shape, &opts); err != nil {
		return nil, nil, err
	}
	rows := int(shape[0])
	in := 0
	if rows > 0 {
		in = len(w) / rows
	}
	if st.In() != in {
		return nil, nil, fmt.Errorf("quant: calibration statistics have %d input channels, weight rows have %d", st.In(), in)
	}
	if st.Gram != nil && len(st.Gram) != in*in {
		return nil, nil, fmt.Errorf("quant: calibration Gram matrix has %d values, want %d", len(st.Gram), in*in)
	}
	if st.RowWeight != nil && len(st.RowWeight) != rows {
		return nil, nil, fmt.Errorf("quant: calibration row weights have %d entries, weight has %d rows", len(st.RowWeight), rows)
	}
	if st.Gram == nil {
		p, rep, err := palettizeDiag(w, shape, st, opts)
		return p, rep, err
	}
	base, err := Palettize(w, shape, opts)
	if err != nil {
		return nil, nil, err
	}
	fb := st.factor()
	groups := base.Groups()
	k := 1 << opts.Bits
	per := len(w) / max(groups, 1)
	own := opts
	own.Indices = nil // the lent storage, if any, holds base's indices
	p := newPalette(w, shape, own)
	rep := &CalibReport{Groups: make([]float64, groups), Groups0: make([]float64, groups)}
	refs := make([]float64, groups)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(opts.Workers, groups) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g := newGroupSolver(st, fb, opts.Bits, opts.GroupSize, in)
			g.lite = liteSchedule(rows, in)
			for {
				i := int(next.Add(1) - 1)
				if i >= groups {
					return
				}
				r0 := i * opts.GroupSize
				gs := g.solve(w[i*per:(i+1)*per], r0,
					base.LUT[i*k:(i+1)*k], base.Indices[i*per:(i+1)*per],
					p.LUT[i*k:(i+1)*k], p.Indices[i*per:(i+1)*per])
				rep.Groups[i], rep.Groups0[i], refs[i] = gs.err, gs.err0, gs.ref
			}
		}()
	}
	wg.Wait()
	for i := range groups {
		rep.Output += rep.Groups[i]
		rep.Output0 += rep.Groups0[i]
		rep.OutputRef += refs[i]
	}
	rep.Weight0 = weightSSE(w, base)
	rep.Weight = weightSSE(w, p)
	return p, rep, nil
}

// palettizeDiag is PalettizeCalibrated for validated arguments and
// diagonal statistics: each group is solved by a diagSolver right after its
// uncalibrated solve, inside Palettize's group loop. The report's figures
// are summed per group, then over groups in order.
func palettizeDiag(w []uint16, shape []int64, st *Stats, opts Options) (*Palette, *CalibReport, error) {
	groups := int(shape[0]) / opts.GroupSize
	k := 1 << opts.Bits
	per := len(w) / groups
	own := opts
	own.Indices = nil // the lent storage, if any, holds the uncalibrated indices
	p := newPalette(w, shape, own)
	rep := &CalibReport{Groups: make([]float64, groups), Groups0: make([]float64, groups)}
	refs := make([]float64, groups)
	wse0 := make([]float64, groups)
	wse := make([]float64, groups)
	// The weighted cuts' λ scale: group 0's (solved before any other group
	// but the last, which runs alongside it) for the groups after it.
	last := groups - 1
	if opts.Bits >= 8 {
		last = groups
	}
	scale := 1.0
	hook := func() (func(*solver, int, []uint16, []uint8), func()) {
		d := getDiagSolver(opts.Bits, st, opts.GroupSize)
		after := func(s *solver, i int, lut0 []uint16, idx0 []uint8) {
			d.scale, d.probe, d.centre = 1, false, false
			switch {
			case opts.Bits >= 8:
			case i == 0:
				d.probe, d.centre = true, groups >= centreGroups && opts.Bits <= centreMaxBits
			case i != last:
				d.scale = scale
			}
			r := d.solve(s, w[i*per:(i+1)*per], i*opts.GroupSize, lut0, idx0,
				p.LUT[i*k:(i+1)*k], p.Indices[i*per:(i+1)*per])
			if i == 0 && d.ratio > 0 {
				scale = d.ratio
			}
			rep.Groups[i], rep.Groups0[i], refs[i] = r.err, r.err0, r.ref
			wse0[i], wse[i] = r.wse0, r.wse
		}
		return after, func() { putDiagSolver(opts.Bits, d) }
	}
	if _, err := palettize(w, shape, opts, hook); err != nil {
		return nil, nil, err
	}
	for i := range groups {
		rep.Output += rep.Groups[i]
		rep.Output0 += rep.Groups0[i]
		rep.OutputRef += refs[i]
		rep.Weight0 += wse0[i]
		rep.Weight += wse[i]
	}
	return p, rep, nil
}

// PalettizeRequest palettizes a converter request, calibrated when
// req.Stats is set.
func PalettizeRequest(req Request, opts Options) (*Palette, *CalibReport, error) {
	opts.Bits, opts.GroupSize = req.Bits, req.GroupSize
	return PalettizeCalibrated(req.Weights, req.Shape, req.Stats, opts)
}

// OutputError returns tr((W−Ŵ) H (W−Ŵ)ᵀ) of palette p against w on st
// (row-weighted when st.RowWeight is set); NaN if the shapes disagree.
func OutputError(w []uint16, p *Palette, st *Stats) float64 {
	d := p.Dense()
	if d == nil || len(d) != len(w) || len(p.Shape) == 0 || st == nil {
		return math.NaN()
	}
	rows := int(p.Shape[0])
	in := len(w) / rows
	if in != st.In() || st.RowWeight != nil && len(st.RowWeight) != rows {
		return math.NaN()
	}
	e := make([]float64, in)
	var tot float64
	for r := range rows {
		for j := range in {
			e[j] = h2f(w[r*in+j]) - h2f(d[r*in+j])
		}
		tot += rowWeight(st, r) * quadForm(st, e)
	}
	return tot
}

func weightSSE(w []uint16, p *Palette) float64 {
	d := p.Dense()
	var s float64
	for i, h := range w {
		e := h2f(h) - h2f(d[i])
		s += e * e
	}
	return s
}

func rowWeight(st *Stats, r int) float64 {
	if st.RowWeight == nil {
		return 1
	}
	return st.RowWeight[r]
}

// quadForm returns eᵀHe (Σ diag·e² without a Gram matrix).
func quadForm(st *Stats, e []float64) float64 {
	n := len(e)
	var s float64
	if st.Gram == nil {
		for j, x := range e {
			s += st.Diag[j] * x * x
		}
		return s
	}
	for i, x := range e {
		if x == 0 {
			continue
		}
		row := st.Gram[i*n : (i+1)*n]
		var t float64
		for j, y := range e {
			t += row[j] * y
		}
		s += x * t
	}
	return s
}

// feedback is the GPTQ factor: columns in order Perm (descending diag H),
// U the upper Cholesky factor of (H_perm + λI)⁻¹, n×n row-major.
type feedback struct {
	n    int
	perm []int
	u    []float64
}

// factor returns the GPTQ factor of st.Gram (nil without Gram or if H is
// not positive definite even after damping).
func (s *Stats) factor() *feedback {
	if s.Gram == nil {
		return nil
	}
	s.once.Do(func() {
		s.fb, s.fbOK = newFeedback(s.Gram, s.Diag)
	})
	if !s.fbOK {
		return nil
	}
	return s.fb
}

func newFeedback(gram, diag []float64) (*feedback, bool) {
	n := len(diag)
	perm := make([]int, n)
	for i := range perm {
		perm[i] = i
	}
	slices.SortStableFunc(perm, func(a, b int) int {
		switch {
		case diag[a] > diag[b]:
			return -1
		case diag[a] < diag[b]:
			return 1
		}
		return 0
	})
	var mean float64
	for _, d := range diag {
		mean += d
	}
	mean /= float64(max(n, 1))
	if mean <= 0 {
		return nil, false
	}
	a := make([]float64, n*n)
	for i := range n {
		for j := range n {
			a[i*n+j] = gram[perm[i]*n+perm[j]]
		}
		if a[i*n+i] <= 0 {
			a[i*n+i] = mean // dead channel: any value works, keep it regular
		}
		a[i*n+i] += dampFraction * mean
	}
	if !cholesky(a, n) {
		return nil, false
	}
	inv := choleskyInverse(a, n)
	// U upper with inv = UᵀU: the transpose of inv's lower factor.
	if !cholesky(inv, n) {
		return nil, false
	}
	u := make([]float64, n*n)
	for i := range n {
		for j := i; j < n; j++ {
			u[i*n+j] = inv[j*n+i]
		}
	}
	return &feedback{n: n, perm: perm, u: u}, true
}

// cholesky overwrites the lower triangle of a (n×n symmetric positive
// definite) with L, a = LLᵀ; the strict upper triangle is zeroed.
func cholesky(a []float64, n int) bool {
	for j := range n {
		s := a[j*n+j]
		for k := range j {
			s -= a[j*n+k] * a[j*n+k]
		}
		if !(s > 0) {
			return false
		}
		d := math.Sqrt(s)
		a[j*n+j] = d
		for i := j + 1; i < n; i++ {
			t := a[i*n+j]
			ri, rj := a[i*n:i*n+j], a[j*n:j*n+j]
			for k := range ri {
				t -= ri[k] * rj[k]
			}
			a[i*n+j] = t / d
		}
		for i := j + 1; i < n; i++ {
			a[j*n+i] = 0
		}
	}
	return true
}

// choleskyInverse returns (LLᵀ)⁻¹ from the lower factor L.
func choleskyInverse(l []float64, n int) []float64 {
	// Li = L⁻¹ (lower), then inv = Liᵀ Li.
	li := make([]float64, n*n)
	for j := range n {
		li[j*n+j] = 1 / l[j*n+j]
		for i := j + 1; i < n; i++ {
			var s float64
			for k := j; k < i; k++ {
				s += l[i*n+k] * li[k*n+j]
			}
			li[i*n+j] = -s / l[i*n+i]
		}
	}
	inv := make([]float64, n*n)
	for i := range n {
		for j := 0; j <= i; j++ {
			var s float64
			for k := i; k < n; k++ {
				s += li[k*n+i] * li[k*n+j]
			}
			inv[i*n+j] = s
			inv[j*n+i] = s
		}
	}
	return inv
}
