package calib

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/anemll/anemll/internal/fp16"
	"github.com/anemll/anemll/internal/hf"
	"github.com/anemll/anemll/internal/quant"
	"github.com/anemll/anemll/internal/reference"
)

// Plan tells sequential calibration how the converter will palettize each
// weight, so that it can quantize the model layer by layer as it goes.
type Plan struct {
	// Bits returns the LUT width of a weight (0: it stays fp16).
	Bits func(name string) int
	// GroupSize is the LUT group size (0: quant.DefaultGroupSize).
	GroupSize int
	// Eligible is the converter's palettization rule (nil: quant.Eligible).
	Eligible func(shape []int64, groupSize int) bool
	// Workers for palettization (0: GOMAXPROCS).
	Workers int
}

// compDamp is the ridge, as a fraction of H's mean diagonal, in the
// compensation solve W* = W + W·(D−H)·(H+λI)⁻¹.
const compDamp = 0.01

// errStop aborts a forward pass once the layers of interest are seen.
var errStop = errors.New("calib: stop")

// CollectSequential is Collect with sequential quantization: decoder
// layer l's statistics come from the model whose layers before l are
// already palettized (as plan says), and each weight's target is the
// least-squares weight W* that maps those inputs X̃ onto the original
// model's outputs (W* = W·XᵀX̃·(X̃ᵀX̃)⁻¹, damped), so later layers make up
// for the error of earlier ones. The LM head comes last, on the final-norm
// outputs of the fully palettized decoder. Weights of inputs wider than
// opts.FullLimit keep a diagonal H and no target. The embedding table, if
// palettized, gets token-frequency statistics and is not fed forward.
// ck supplies the fp16 weights the converter palettizes.
func CollectSequential(cfg *hf.Config, ck *hf.Checkpoint, ids []int, opts Options, plan Plan) (*Set, error) {
	if opts.ContextLength <= 0 {
		return nil, fmt.Errorf("calib: context length %d", opts.ContextLength)
	}
	if opts.Tokens == 0 {
		opts.Tokens = DefaultTokens
	}
	if opts.FullLimit == 0 {
		opts.FullLimit = DefaultFullLimit
	}
	if plan.GroupSize == 0 {
		plan.GroupSize = quant.DefaultGroupSize
	}
	if plan.Eligible == nil {
		plan.Eligible = quant.Eligible
	}
	C := opts.ContextLength
	n := min(len(ids), opts.Tokens) / C
	if n == 0 {
		return nil, fmt.Errorf("%w: %d tokens (limit %d), fewer than one sequence of the context length %d; give more text or a larger --calibration-tokens",
			ErrTooShort, len(ids), opts.Tokens, C)
	}
	base := reference.CheckpointWeights(ck)
	fp, err := reference.New(cfg, base)
	if err != nil {
		return nil, err
	}
	s := &Set{Tokens: n * C, Sequences: n, stats: map[string]*quant.Stats{},
		freq: make([]float64, cfg.VocabSize), embed: "model.embed_tokens.weight", Reports: map[string]*quant.CalibReport{}}
	for _, id := range ids[:n*C] {
		if id >= 0 && id < len(s.freq) {
			s.freq[id]++
		}
	}
	for i := range s.freq {
		s.freq[i]++
	}
	repl := map[string][]float32{}
	L := cfg.NumHiddenLayers
	for stage := 0; stage <= L; stage++ {
		q, err := reference.New(cfg, replaced{base, repl})
		if err != nil {
			return nil, err
		}
		in := func(name string) bool {
			l, ok := layerOf(name)
			if stage == L {
				return name == "lm_head.weight"
			}
			return ok && l == stage
		}
		past := func(name string) bool {
			if stage == L {
				return false
			}
			l, ok := layerOf(name)
			return !ok || l > stage
		}
		pc := newPairCollector(opts.FullLimit)
		for seq := range n {
			x := ids[seq*C : (seq+1)*C]
			rows := map[string][][]float32{}
			if err := observeUntil(fp, x, func(name string, v []float32) error {
				if past(name) {
					return errStop
				}
				if in(name) {
					rows[name] = append(rows[name], append([]float32(nil), v...))
				}
				return nil
			}); err != nil {
				return nil, err
			}
			count := map[string]int{}
			if err := observeUntil(q, x, func(name string, v []float32) error {
				if past(name) {
					return errStop
				}
				if in(name) {
					t := count[name]
					count[name]++
					return pc.observe(name, v, rows[name][t])
				}
				return nil
			}); err != nil {
				return nil, err
			}
		}
		for _, name := range pc.order {
			a := pc.accs[name].owner()
			st, err := a.stats(name, ck)
			if err != nil {
				return nil, err
			}
			s.stats[name] = st
			info, _ := ck.Info(name)
			bits := plan.Bits(name)
			if bits == 0 || !plan.Eligible(info.Shape, plan.GroupSize) {
				continue
			}
			w, _, err := ck.Float16(name)
			if err != nil {
				return nil, fmt.Errorf("calib: %w", err)
			}
			p, rep, err := quant.PalettizeCalibrated(w, info.Shape, st, quant.Options{Bits: bits, GroupSize: plan.GroupSize, Workers: plan.Workers})
			if err != nil {
				return nil, fmt.Errorf("calib: palettize %s: %w", name, err)
			}
			s.Reports[name] = rep
			d := p.Dense()
			f := make([]float32, len(d))
			for i, h := range d {
				f[i] = fp16.Bits(h).Float32()
			}
			repl[name] = f
		}
	}
	return s, nil
}

// layerOf parses the decoder layer index of "model.layers.N.…".
func layerOf(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, "model.layers.")
	if !ok {
		return 0, false
	}
	num, _, ok := strings.Cut(rest, ".")
	if !ok {
		return 0, false
	}
	l, err := strconv.Atoi(num)
	return l, err == nil
}

// observeUntil runs ref.Forward(ids) with fn observing; fn returning
// errStop ends the pass early (without error), any other error fails it.
func observeUntil(ref *reference.Model, ids []int, fn func(string, []float32) error) (err error) {
	type stop struct{ err error }
	ref.Observe(func(name string, x []float32) {
		if e := fn(name, x); e != nil {
			panic(stop{e})
		}
	})
	defer ref.Observe(nil)
	defer func() {
		if r := recover(); r != nil {
			s, ok := r.(stop)
			if !ok {
				panic(r)
			}
			if s.err != errStop {
				err = s.err
			}
		}
	}()
	_, err = ref.Forward(ids)
	return err
}

// replaced serves base with some tensors replaced.
type replaced struct {
	base reference.Weights
	repl map[string][]float32
}

func (r replaced) Tensor(name string) ([]float32, []int64, error) {
	d, s, err := r.base.Tensor(name)
	if v, ok := r.repl[name]; ok && err == nil {
		return v, s, nil
	}
	return d, s, err
}

// pairAcc accumulates, for one input, H = X̃ᵀX̃ of the partly quantized
// model's rows and C = X̃ᵀX against the original model's rows.
type pairAcc struct {
	n     int
	full  bool
	h, c  []float64
	diag  []float64
	last  []float32
	alias *pairAcc
	done  bool // lower triangle and diagonal filled in
}

func (a *pairAcc) owner() *pairAcc {
	for a.alias != nil {
		a = a.alias
	}
	return a
}

type pairCollector struct {
	full  int
	accs  map[string]*pairAcc
	order []string
	prev  *pairAcc
}

func newPairCollector(full int) *pairCollector {
	return &pairCollector{full: full, accs: map[string]*pairAcc{}}
}

func (pc *pairCollector) observe(name string, xq, xf []float32) error {
	if xf == nil || len(xf) != len(xq) {
		return fmt.Errorf("calib: %s: the original and the quantized model disagree on the inputs", name)
	}
	a := pc.accs[name]
	if a == nil {
		if p := pc.prev; p != nil && p.n == len(xq) && equal(p.last, xq) {
			a = &pairAcc{n: len(xq), alias: p.owner()}
		} else {
			n := len(xq)
			a = &pairAcc{n: n, full: n <= pc.full, diag: make([]float64, n), last: make([]float32, n)}
			if a.full {
				a.h = make([]float64, n*n)
				a.c = make([]float64, n*n)
			}
		}
		pc.accs[name] = a
		pc.order = append(pc.order, name)
	}
	if a.alias != nil {
		o := a.owner()
		if !equal(o.last, xq) {
			return fmt.Errorf("calib: weight %s shared its input with another layer once but not always", name)
		}
		pc.prev = o
		return nil
	}
	copy(a.last, xq)
	pc.prev = a
	n := a.n
	if !a.full {
		for i, v := range xq {
			a.diag[i] += float64(v) * float64(v)
		}
		return nil
	}
	for i, v := range xq {
		if v == 0 {
			continue
		}
		vi := float64(v)
		hr := a.h[i*n : (i+1)*n]
		for j := i; j < n; j++ {
			hr[j] += vi * float64(xq[j])
		}
		cr := a.c[i*n : (i+1)*n]
		for j, u := range xf {
			cr[j] += vi * float64(u)
		}
	}
	return nil
}

// stats returns the statistics of weight name fed by this input: diag,
// H and the compensated target W* = W + (H+λI)⁻¹(C−H)·W per row.
func (a *pairAcc) stats(name string, ck *hf.Checkpoint) (*quant.Stats, error) {
	n := a.n
	if !a.full {
		return &quant.Stats{Diag: a.diag}, nil
	}
	if !a.done {
		a.done = true
		for i := range n {
			a.diag[i] = a.h[i*n+i]
			for j := i + 1; j < n; j++ {
				a.h[j*n+i] = a.h[i*n+j]
			}
		}
	}
	st := &quant.Stats{Diag: a.diag, Gram: a.h}
	y, ok := a.correction()
	if !ok {
		return st, nil
	}
	w, _, err := ck.Float16(name)
	if err != nil {
		return nil, fmt.Errorf("calib: %w", err)
	}
	rows := len(w) / n
	t := make([]uint16, len(w))
	wr := make([]float64, n)
	for r := range rows {
		for j := range n {
			wr[j] = float64(fp16.Bits(w[r*n+j]).Float32())
		}
		for m := range n {
			ym := y[m*n : (m+1)*n]
			var s float64
			for j, x := range wr {
				s += ym[j] * x
			}
			v := wr[m] + s
			if math.IsNaN(v) || math.Abs(v) > 65504 {
				return &quant.Stats{Diag: a.diag, Gram: a.h}, nil
			}
			t[r*n+m] = uint16(fp16.FromFloat64(v))
		}
	}
	st.Target = t
	return st, nil
}

// correction returns Y = (H+λI)⁻¹(C−H), n×n, so that W*_r = W_r + Y·W_r;
// false if H is singular.
func (a *pairAcc) correction() ([]float64, bool) {
	n := a.n
	var mean float64
	for _, d := range a.diag {
		mean += d
	}
	mean /= float64(n)
	if !(mean > 0) {
		return nil, false
	}
	l := make([]float64, n*n)
	copy(l, a.h)
	for i := range n {
		l[i*n+i] += compDamp * mean
	}
	if !cholesky(l, n) {
		return nil, false
	}
	// Solve column by column: (H+λI) y_j = (C−H)[:, j].
	y := make([]float64, n*n)
	col := make([]float64, n)
	for j := range n {
		for i := range n {
			col[i] = a.c[i*n+j] - a.h[i*n+j]
		}
		for i := range n {
			s := col[i]
			for k := range i {
				s -= l[i*n+k] * col[k]
			}
			col[i] = s / l[i*n+i]
		}
		for i := n - 1; i >= 0; i-- {
			s := col[i]
			for k := i + 1; k < n; k++ {
				s -= l[k*n+i] * col[k]
			}
			col[i] = s / l[i*n+i]
		}
		for i := range n {
			y[i*n+j] = col[i]
		}
	}
	return y, true
}

// cholesky overwrites the lower triangle of a with L, a = LLᵀ.
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
			for k := range j {
				t -= a[i*n+k] * a[j*n+k]
			}
			a[i*n+j] = t / d
		}
	}
	return true
}
