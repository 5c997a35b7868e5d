// Package quant palettizes fp16 weights the way ANEMLL asks coremltools to:
// k-means with a look-up table per group of output channels
// (granularity "per_grouped_channel", mode "kmeans"), stored as Core ML
// constexpr_lut_to_dense indices and LUT.
//
// Each group of GroupSize consecutive slices along axis 0 gets its own table
// of 2^Bits fp16 values; every weight stores the index of its table entry.
// The solver works on the group's sorted distinct fp16 values (at most the
// group's size), where 1-D k-means reduces to choosing k−1 cut points in a
// sorted list and prefix sums give any cluster's error in O(1). Every group
// is solved exactly (the clustering minimises the squared error before
// rounding): a few passes of the penalised problem (error + λ per cluster,
// solved in one left-to-right pass thanks to the quadrangle inequality) search λ for k
// clusters, and when they stop one or two clusters short, an exact dynamic
// programme confined to the windows where the interlacing of optimal
// solutions puts the cuts finishes. Centroids are rounded to the nearest fp16
// value and every weight takes its nearest LUT entry (ties to the lower
// index); where clusters hold few distinct values, the cuts are then
// re-optimised for the rounded error. The work per group grows with its
// size (n log n at worst), whatever the group size and bit width. Results are
// deterministic and independent of the number of workers.
package quant

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/anemll/anemll/internal/bitpack"
)

// DefaultGroupSize is ANEMLL's group size along the output-channel axis.
const DefaultGroupSize = 8

// WeightThreshold is coremltools' default weight_threshold: only tensors with
// more elements than this are palettized.
const WeightThreshold = 2048

// ErrUnsupported reports options the palettizer does not handle.
var ErrUnsupported = errors.New("quant: unsupported")

// Options configures Palettize.
type Options struct {
	Bits      int // index width: 1, 2, 3, 4, 6 or 8
	GroupSize int // slices of axis 0 per LUT; 0 means DefaultGroupSize
	Workers   int // parallel groups; 0 means runtime.GOMAXPROCS(0)
	// Indices, if its capacity holds one index per weight, is storage
	// the palette's Indices reuse (every element is overwritten), saving
	// the allocation and zeroing of a fresh slice.
	Indices []uint8
}

// Palette is a palettized tensor: indices plus one LUT per group.
type Palette struct {
	Bits      int
	GroupSize int
	Shape     []int64  // the weight's shape
	Indices   []uint8  // one LUT index per weight, row-major
	LUT       []uint16 // fp16 bits, groups × 2^Bits, each group's table ascending
}

// Groups returns the number of LUTs, Shape[0]/GroupSize (0 for an empty
// or malformed palette).
func (p *Palette) Groups() int {
	if len(p.Shape) == 0 || p.GroupSize <= 0 {
		return 0
	}
	return int(p.Shape[0]) / p.GroupSize
}

// LUTShape returns the shape of the constexpr_lut_to_dense lut input:
// [Shape[0]/GroupSize, 1, …, 1, 2^Bits, 1] with rank len(Shape)+2, e.g.
// [Cout/8,1,1,1,16,1] for a 4-bit conv weight [Cout,Cin,1,1].
func (p *Palette) LUTShape() []int64 {
	s := make([]int64, len(p.Shape)+2)
	for i := range s {
		s[i] = 1
	}
	s[0] = p.Shape[0] / int64(p.GroupSize)
	s[len(s)-2] = 1 << p.Bits
	return s
}

// Dense expands the palette back to fp16 weights (row-major, Shape). It
// returns nil for a malformed palette (one this package would not make).
func (p *Palette) Dense() []uint16 {
	groups := p.Groups()
	if p.Bits < 1 || p.Bits > 8 || groups == 0 || len(p.Indices)%groups != 0 {
		return nil
	}
	k := 1 << p.Bits
	if len(p.LUT) < groups*k {
		return nil
	}
	out := make([]uint16, len(p.Indices))
	per := len(p.Indices) / groups
	for g := 0; g < groups; g++ {
		lut := p.LUT[g*k : (g+1)*k]
		idx := p.Indices[g*per : (g+1)*per]
		o := out[g*per : (g+1)*per]
		for i, x := range idx {
			if int(x) >= k {
				return nil
			}
			o[i] = lut[x]
		}
	}
	return out
}

// PackedIndices returns the indices packed LSB-first at Bits bits per index,
// the data of the uint{Bits} indices blob in weight.bin.
func (p *Palette) PackedIndices() []byte {
	return bitpack.Pack(make([]byte, 0, bitpack.PackedLen(len(p.Indices), p.Bits)), p.Indices, p.Bits)
}

// Eligible reports whether coremltools' default rule palettizes a weight of
// this shape: rank at least 2, more than WeightThreshold elements, and axis 0
// divisible by groupSize (0 means DefaultGroupSize).
func Eligible(shape []int64, groupSize int) bool {
	if groupSize == 0 {
		groupSize = DefaultGroupSize
	}
	if len(shape) < 2 || groupSize < 0 {
		return false
	}
	n, ok := elements(shape)
	return ok && n > WeightThreshold && shape[0]%int64(groupSize) == 0
}

// elements returns the product of shape, or false if a dimension is not
// positive or the product overflows an int.
func elements(shape []int64) (int, bool) {
	n := int64(1)
	for _, d := range shape {
		if d <= 0 || n > math.MaxInt32*int64(1<<20)/d {
			return 0, false
		}
		n *= d
	}
	return int(n), true
}

// check validates Palettize's arguments (and the Lloyd baseline's in the
// tests) and fills in defaults.
func check(w []uint16, shape []int64, opts *Options) error {
	switch opts.Bits {
	case 1, 2, 3, 4, 6, 8:
	default:
		return fmt.Errorf("%w: %d-bit palettization (want 1, 2, 3, 4, 6 or 8)", ErrUnsupported, opts.Bits)
	}
	if opts.GroupSize == 0 {
		opts.GroupSize = DefaultGroupSize
	}
	if opts.GroupSize < 0 {
		return fmt.Errorf("quant: negative group size %d", opts.GroupSize)
	}
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	if len(shape) == 0 {
		return fmt.Errorf("quant: scalar weight cannot be palettized")
	}
	n, ok := elements(shape)
	if !ok {
		return fmt.Errorf("quant: bad shape %v", shape)
	}
	if n != len(w) {
		return fmt.Errorf("quant: shape %v has %d elements, weights have %d", shape, n, len(w))
	}
	if shape[0]%int64(opts.GroupSize) != 0 {
		return fmt.Errorf("quant: axis 0 size %d not divisible by group size %d", shape[0], opts.GroupSize)
	}
	return nil
}

// nonFinite returns an error naming the first non-finite weight of w.
func nonFinite(w []uint16) error {
	for i, h := range w {
		if h&0x7c00 == 0x7c00 {
			return fmt.Errorf("quant: weight %d is not finite (fp16 bits %#04x)", i, h)
		}
	}
	return nil
}

// newPalette allocates the result for validated arguments.
func newPalette(w []uint16, shape []int64, opts Options) *Palette {
	groups := int(shape[0]) / opts.GroupSize
	idx := opts.Indices
	if cap(idx) >= len(w) {
		idx = idx[:len(w)]
	} else {
		idx = make([]uint8, len(w))
	}
	return &Palette{
		Bits:      opts.Bits,
		GroupSize: opts.GroupSize,
		Shape:     append([]int64(nil), shape...),
		Indices:   idx,
		LUT:       make([]uint16, groups<<opts.Bits),
	}
}

// Palettize clusters the fp16 weights w (bit patterns, row-major with the
// given shape) group by group along axis 0 and returns the palette. Each LUT
// is ascending; a group with at most 2^Bits distinct values is represented
// exactly (its table is padded by repeating the largest value). Weights must
// be finite; −0 is stored as +0.
func Palettize(w []uint16, shape []int64, opts Options) (*Palette, error) {
	if err := check(w, shape, &opts); err != nil {
		return nil, err
	}
	return palettize(w, shape, opts, nil)
}

// groupHook lets a caller of palettize work on each group right after its
// uncalibrated solve, while the group's weights are in cache and the solver
// still holds their sorted distinct values. Each goroutine palettize solves
// groups on calls the hook once; the after function it returns is then
// called for every group that goroutine solves (g the group, lut and idx
// its uncalibrated palette and indices; s must not be changed), and release
// once the goroutine is done. Groups whose weights are not finite are not
// passed to after.
type groupHook func() (after func(s *solver, g int, lut []uint16, idx []uint8), release func())

// palettize is Palettize on validated arguments, with an optional hook.
func palettize(w []uint16, shape []int64, opts Options, hook groupHook) (*Palette, error) {
	p := newPalette(w, shape, opts)
	groups := p.Groups()
	per := len(w) / groups
	k := 1 << opts.Bits
	// Group 0 first: the λ that gave it 2^Bits clusters, relative to the
	// estimate, calibrates the estimate for the tensor's other groups
	// (which are alike), saving penalised passes. The last group is solved
	// uncalibrated meanwhile, so that a second worker is not idle on a
	// tensor of few groups. Which groups are calibrated, and how, depends
	// only on the weights and the group count, so results do not depend on
	// the number of workers. (Not at 8 bits, where many clusterings tie
	// before rounding and the λ path decides between them; there the
	// palettes stay as they were with every group calibrated.)
	last := groups - 1
	if opts.Bits >= 8 {
		last = groups
	}
	var lastOK atomic.Bool
	lastOK.Store(true)
	var lastWG sync.WaitGroup
	// solve solves group g on s and runs the hook's after on it.
	solve := func(s *solver, g int, after func(*solver, int, []uint16, []uint8)) bool {
		lut, idx := p.LUT[g*k:(g+1)*k], p.Indices[g*per:(g+1)*per]
		if _, ok := s.solveGroup(w[g*per:(g+1)*per], lut, idx); !ok {
			return false
		}
		if after != nil {
			after(s, g, lut, idx)
		}
		return true
	}
	attach := func() (func(*solver, int, []uint16, []uint8), func()) {
		if hook == nil {
			return nil, func() {}
		}
		return hook()
	}
	solveLast := func() {
		defer lastWG.Done()
		s := getSolver(opts.Bits)
		s.scale = 1
		defer putSolver(s)
		after, release := attach()
		defer release()
		if !solve(s, last, after) {
			lastOK.Store(false)
		}
	}
	if last > 0 && last < groups {
		lastWG.Add(1)
		if opts.Workers > 1 {
			go solveLast()
		} else {
			solveLast()
		}
	}
	s0 := getSolver(opts.Bits)
	s0.scale, s0.hitRatio = 1, 0
	after0, release0 := attach()
	ok0 := solve(s0, 0, after0)
	release0()
	if !ok0 {
		putSolver(s0)
		lastWG.Wait()
		return nil, nonFinite(w)
	}
	scale := 1.0
	if r := s0.hitRatio; r > 0 {
		scale = r
	}
	if groups >= centreGroups && opts.Bits <= centreMaxBits {
		// Aim at the middle of group 0's range of λ instead (two more
		// exact solves of group 0; worth it on tensors of many groups).
		if r, ok := s0.windowCentre(); ok {
			scale = r
		}
	}
	putSolver(s0)
	var next atomic.Int64
	next.Store(1)
	var bad atomic.Bool
	var wg sync.WaitGroup
	for range min(opts.Workers, last-1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := getSolver(opts.Bits)
			s.scale = scale
			defer putSolver(s)
			after, release := attach()
			defer release()
			for !bad.Load() {
				g := int(next.Add(1) - 1)
				if g >= last {
					return
				}
				if !solve(s, g, after) {
					bad.Store(true)
				}
			}
		}()
	}
	wg.Wait()
	lastWG.Wait()
	if bad.Load() || !lastOK.Load() {
		return nil, nonFinite(w)
	}
	return p, nil
}

// centreGroups is the number of groups from which Palettize calibrates
// the first penalised pass on the centre of group 0's λ range
// (solver.windowCentre) rather than on the λ its search hit.
// centreMaxBits is the widest LUT it does that for: at 6 bits and more the
// ranges are a few per cent wide, narrower than their spread between
// groups, so the centre wins no first passes, and the λ path would only
// change which of several clusterings of equal error before rounding
// (there are ties at 8 bits) a group gets.
const centreGroups, centreMaxBits = 64, 4

// solvers keeps idle solvers per bit width: a solver's tables (a count per
// possible half, an index per possible half) cost more to allocate and zero
// than a small tensor costs to palettize. A solver's results do not depend
// on what it solved before.
var solvers [9]sync.Pool

func getSolver(bits int) *solver {
	if s, ok := solvers[bits].Get().(*solver); ok {
		return s
	}
	return newSolver(bits)
}

func putSolver(s *solver) {
	bits := 0
	for 1<<bits < s.k {
		bits++
	}
	solvers[bits].Put(s)
}

// Error returns the mean squared error of the palette against the original
// fp16 weights w, and the (population) variance of w, both in float64. Both
// are NaN if w is empty or does not match a well-formed palette.
func Error(w []uint16, p *Palette) (mse, variance float64) {
	if len(w) == 0 || len(w) != len(p.Indices) {
		return math.NaN(), math.NaN()
	}
	d := p.Dense()
	if d == nil {
		return math.NaN(), math.NaN()
	}
	var se, s1, s2 float64
	for i, h := range w {
		v := halfTable[h]
		e := v - halfTable[d[i]]
		se += e * e
		s1 += v
		s2 += v * v
	}
	n := float64(len(w))
	mean := s1 / n
	return se / n, math.Max(s2/n-mean*mean, 0)
}
