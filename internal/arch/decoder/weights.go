package decoder

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"unsafe"

	"github.com/anemll/anemll/internal/bitpack"
	"github.com/anemll/anemll/internal/fp16"
	"github.com/anemll/anemll/internal/mil"
	"github.com/anemll/anemll/internal/quant"
)

// tensorRef says how to produce one MIL weight from a checkpoint tensor:
// rows [Row0, Row1) along axis 0 of tensor Name (canonical name, see
// tensorNames; all rows when Row1 is 0), followed by PadRows zero rows,
// viewed with MIL shape Shape. PlusOne stores 1 + w (Gemma's norm gains).
type tensorRef struct {
	Name       string
	Row0, Row1 int64
	PadRows    int64
	Shape      []int64
	PlusOne    bool
}

// readFP16 converts the referenced rows to fp16 bit patterns, followed by
// r.PadRows zero rows. It reads only those rows from the memory-mapped
// checkpoint.
func (c *Converter) readFP16(r tensorRef) ([]uint16, error) { return c.readFP16Into(r, nil) }

// readFP16Into is readFP16 writing into buf's storage when its capacity
// suffices (every element is overwritten).
func (c *Converter) readFP16Into(r tensorRef, buf []uint16) ([]uint16, error) {
	if c.missing[r.Name] {
		return c.defaultFP16(r), nil
	}
	name := c.names.of(r.Name)
	info, ok := c.ckpt.Info(name)
	if !ok {
		return nil, fmt.Errorf("decoder: tensor %q not in checkpoint", name)
	}
	scale := c.residualScale(r.Name)
	if r.PlusOne {
		f, err := c.ckpt.Float32(name)
		if err != nil {
			return nil, fmt.Errorf("decoder: %w", err)
		}
		out := make([]uint16, len(f))
		for i, v := range f {
			out[i] = uint16(fp16.FromFloat32((1 + v) * scale))
		}
		return out, nil
	}
	rows := int64(1)
	if len(info.Shape) > 0 {
		rows = info.Shape[0]
	}
	row0, row1 := r.Row0, r.Row1
	if row1 == 0 {
		row0, row1 = 0, rows
	}
	per := int64(1)
	if rows > 0 {
		per = info.NumElements() / rows
	}
	n := max(0, row1-row0) // Float16Rows rejects a bad range
	size := (n + r.PadRows) * per
	var out []uint16
	if int64(cap(buf)) >= size {
		out = buf[:size]
		clear(out[n*per:])
	} else {
		out = make([]uint16, size)
	}
	over, err := c.ckpt.Float16Rows(name, row0, row1, out[:n*per])
	if err != nil {
		return nil, fmt.Errorf("decoder: %w", err)
	}
	if over > 0 && c.opts.OnOverflow != nil {
		c.opts.OnOverflow(name, over)
	}
	if scale != 1 {
		// A power of two: exact in fp16 but for values pushed into the
		// subnormal range.
		for i, h := range out[:n*per] {
			out[i] = uint16(fp16.FromFloat32(fp16.ToFloat32(fp16.Bits(h)) * scale))
		}
	}
	return out, nil
}

// residualScale is the factor weight name (canonical) is stored with: α
// for the tensors that end a residual branch, 1 for the others.
func (c *Converter) residualScale(name string) float32 {
	a := c.opts.ResidualScale
	if a == 0 || a == 1 {
		return 1
	}
	var branch []string
	if c.spec.Family.SandwichNorms {
		branch = []string{"post_attention_layernorm.weight", "post_feedforward_layernorm.weight"}
	} else {
		branch = []string{"self_attn.o_proj.weight", "self_attn.o_proj.bias", "mlp.down_proj.weight", "mlp.down_proj.bias"}
	}
	if strings.HasPrefix(name, "model.layers.") && hasAnySuffix(name, branch) {
		return float32(a)
	}
	return 1
}

// littleEndianHost reports whether this machine stores uint16 as Core ML
// files do (little-endian).
var littleEndianHost = func() bool {
	var x uint16 = 1
	return *(*byte)(unsafe.Pointer(&x)) == 1
}()

// halfBytes returns the little-endian bytes of h (sharing h's memory on
// little-endian hosts).
func halfBytes(h []uint16) []byte {
	if len(h) == 0 {
		return []byte{}
	}
	if littleEndianHost {
		// The slice already holds the little-endian bytes: reuse them
		// instead of a second copy of a possibly huge weight.
		return unsafe.Slice((*byte)(unsafe.Pointer(&h[0])), 2*len(h))
	}
	b := make([]byte, 2*len(h))
	for i, x := range h {
		binary.LittleEndian.PutUint16(b[2*i:], x)
	}
	return b
}

// weightSet creates the weight consts of one package. Values are cached by
// const name so the two functions of a combined package share them.
type weightSet struct {
	c      *Converter
	bits   int
	group  int // output channels per LUT, or PerTensor
	values map[string]*weightValues
	// dense lists matrix weights left fp16 in a LUT package, in order.
	dense []string
	// scratch holds the working buffers of palettization between weights.
	scratch scratch
}

// scratch lends the two buffers palettizing a weight needs and drops
// once it is packed, the weight's fp16 values and its unpacked indices,
// so that the weights of a package reuse them instead of allocating (and
// zeroing) fresh ones each time; they live as long as the weight set.
type scratch struct {
	mu   sync.Mutex
	half []uint16
	idx  []uint8
}

// take returns the buffers (nil if another weight holds them).
func (s *scratch) take() ([]uint16, []uint8) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, x := s.half, s.idx
	s.half, s.idx = nil, nil
	return h, x
}

// give keeps h and x for the next weight (the larger ones, if another
// weight gave buffers back meanwhile).
func (s *scratch) give(h []uint16, x []uint8) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cap(h) > cap(s.half) {
		s.half = h
	}
	if cap(x) > cap(s.idx) {
		s.idx = x
	}
}

type weightValues struct {
	dense    *mil.Value
	idx, lut *mil.Value
}

func (c *Converter) newWeightSet(bits int) *weightSet {
	return &weightSet{c: c, bits: bits, group: c.opts.LUTGroupSize, values: map[string]*weightValues{}}
}

// groupFor returns the LUT group size for a weight of shape s.
func (ws *weightSet) groupFor(s []int64) int {
	if ws.group == PerTensor && len(s) > 0 {
		return int(s[0])
	}
	return ws.group
}

// denseValue is a lazy fp16 tensor read from the checkpoint when the
// writer asks for it.
func (ws *weightSet) denseValue(r tensorRef) *mil.Value {
	c := ws.c
	return mil.LazyTensor(mil.Float16, r.Shape, func() ([]byte, error) {
		h, err := c.readFP16(r)
		if err != nil {
			return nil, err
		}
		return halfBytes(h), nil
	})
}

// lutPair computes a weight's palettized form once for its two literals
// and drops each half once it has been handed out.
type lutPair struct {
	mu       sync.Mutex
	compute  func() (idx, lut []byte, err error)
	idx, lut []byte
}

func (p *lutPair) take(wantLUT bool) ([]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	have := p.idx
	if wantLUT {
		have = p.lut
	}
	if have == nil {
		idx, lut, err := p.compute()
		if err != nil {
			return nil, err
		}
		p.idx, p.lut = idx, lut
	}
	if wantLUT {
		out := p.lut
		p.lut = nil
		return out, nil
	}
	out := p.idx
	p.idx = nil
	return out, nil
}

// parallelPackMin is the index count from which packIndices splits the
// work across GOMAXPROCS goroutines.
const parallelPackMin = 1 << 20

// packIndices is bitpack.PackInRange into a new slice, in parts of whole
// bytes packed in parallel for a large weight (the rest of the converter
// waits for it).
func packIndices(ind []uint8, bits int) ([]byte, error) {
	parts := min(runtime.GOMAXPROCS(0), len(ind)/parallelPackMin)
	if parts <= 1 {
		return bitpack.PackInRange(nil, ind, bits)
	}
	out := make([]byte, bitpack.PackedLen(len(ind), bits))
	per := (len(ind)/parts + 7) &^ 7 // whole bytes per part
	errs := make([]error, parts)
	var wg sync.WaitGroup
	for p := range parts {
		lo, hi := min(p*per, len(ind)), min((p+1)*per, len(ind))
		o0, o1 := lo/8*bits, lo/8*bits+bitpack.PackedLen(hi-lo, bits)
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[p] = bitpack.PackInRange(out[o0:o0:o1], ind[lo:hi], bits)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, bitpack.CheckRange(ind, bits) // names the first bad index
		}
	}
	return out, nil
}

var uintTypes = map[int]mil.DType{1: mil.UInt1, 2: mil.UInt2, 3: mil.UInt3, 4: mil.UInt4, 6: mil.UInt6, 8: mil.UInt8}

// lutShape returns the shape of the LUT for a weight of shape s grouped
// along axis 0: [s0/g, 1, …, 1, 2^bits, 1].
func lutShape(s []int64, bits, group int) []int64 {
	out := make([]int64, len(s)+2)
	out[0] = s[0] / int64(group)
	for i := 1; i < len(s); i++ {
		out[i] = 1
	}
	out[len(s)] = 1 << bits
	out[len(s)+1] = 1
	return out
}

func (ws *weightSet) lutValues(r tensorRef) (idx, lut *mil.Value) {
	c, bits, group := ws.c, ws.bits, ws.groupFor(r.Shape)
	n := int64(1)
	for _, d := range r.Shape {
		n *= d
	}
	ls := lutShape(r.Shape, bits, group)
	nLUT := ls[0] << bits
	pair := &lutPair{compute: func() ([]byte, []byte, error) {
		hbuf, ibuf := ws.scratch.take()
		w, err := c.readFP16Into(r, hbuf)
		if err != nil {
			return nil, nil, err
		}
		ind, table, err := c.opts.Palettize(quant.Request{Name: r.Name, Row0: r.Row0, Row1: r.Row1,
			Weights: w, Shape: r.Shape, Bits: bits, GroupSize: group, Indices: ibuf})
		if err != nil {
			return nil, nil, fmt.Errorf("decoder: palettize %q: %w", r.Name, err)
		}
		if int64(len(ind)) != n || int64(len(table)) != nLUT {
			return nil, nil, fmt.Errorf("decoder: palettize %q: got %d indices and %d LUT entries, want %d and %d",
				r.Name, len(ind), len(table), n, nLUT)
		}
		packed, err := packIndices(ind, bits)
		if err != nil {
			return nil, nil, fmt.Errorf("decoder: palettize %q: %w", r.Name, err)
		}
		ws.scratch.give(w, ind)
		return packed, halfBytes(table), nil
	}}
	idx = mil.LazyTensor(uintTypes[bits], r.Shape, func() ([]byte, error) { return pair.take(false) })
	lut = mil.LazyTensor(mil.Float16, ls, func() ([]byte, error) { return pair.take(true) })
	return idx, lut
}

// matrix adds a weight feeding conv, linear or gather: palettized when the
// package has LUT bits and the weight is eligible, else a dense const.
func (ws *weightSet) matrix(b *mil.Builder, name string, r tensorRef) *mil.Var {
	v := ws.values[name]
	if v == nil {
		v = &weightValues{}
		if ws.bits > 0 && ws.c.opts.Eligible(r.Shape, ws.groupFor(r.Shape)) {
			v.idx, v.lut = ws.lutValues(r)
		} else {
			v.dense = ws.denseValue(r)
			if ws.bits > 0 {
				ws.dense = append(ws.dense, name)
				ws.c.warnMisfit(r, ws.groupFor(r.Shape))
			}
		}
		ws.values[name] = v
	}
	if v.dense != nil {
		return b.Const(name, v.dense)
	}
	return b.Op("constexpr_lut_to_dense", name+"_palettized", mil.In{
		"indices": mil.Literal{Value: v.idx},
		"lut":     mil.Literal{Value: v.lut},
	})
}

// vector adds a dense fp16 const (norm gammas, biases).
func (ws *weightSet) vector(b *mil.Builder, name string, r tensorRef) *mil.Var {
	v := ws.values[name]
	if v == nil {
		v = &weightValues{dense: ws.denseValue(r)}
		ws.values[name] = v
	}
	return b.Const(name, v.dense)
}

// constValue adds a const with a fixed value shared across functions.
func (ws *weightSet) constValue(b *mil.Builder, name string, mk func() *mil.Value) *mil.Var {
	v := ws.values[name]
	if v == nil {
		v = &weightValues{dense: mk()}
		ws.values[name] = v
	}
	return b.Const(name, v.dense)
}

// milName turns a Hugging Face tensor name into the const name ANEMLL's
// packages use: "model." + name with dots as underscores + "_to_fp16".
func milName(hfName string) string {
	b := []byte("model_" + hfName + "_to_fp16")
	for i, c := range b {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			b[i] = '_'
		}
	}
	return string(b)
}

// misfits counts the weights reported by warnMisfit, by checkpoint rows.
type misfits struct {
	mu   sync.Mutex
	seen map[string]bool
}

// maxMisfitLines is how many weights warnMisfit names before it sums up.
const maxMisfitLines = 3

// warnMisfit is called for a weight Options.Eligible refused with the LUT
// group size group. If a group of one row would have been accepted, only
// the group size keeps it fp16 (its output channels are not a multiple):
// the user asked for a LUT and gets a larger package, so it warns, once
// per weight across all parts. Weights refused whatever the group (under
// quant.WeightThreshold) stay fp16 silently, as in coremltools.
func (c *Converter) warnMisfit(r tensorRef, group int) {
	if !c.opts.Eligible(r.Shape, 1) {
		return
	}
	key := fmt.Sprintf("%s[%d:%d]", r.Name, r.Row0, r.Row1)
	c.misfit.mu.Lock()
	defer c.misfit.mu.Unlock()
	if c.misfit.seen == nil {
		c.misfit.seen = map[string]bool{}
	}
	if c.misfit.seen[key] {
		return
	}
	c.misfit.seen[key] = true
	switch n := len(c.misfit.seen); {
	case n <= maxMisfitLines:
		what := c.names.of(r.Name)
		if r.Row1 > 0 {
			what += fmt.Sprintf(" rows %d-%d", r.Row0, r.Row1-1)
		}
		c.warn(fmt.Sprintf("warning: %s stays fp16: its %d output channels are not a multiple of the LUT group size %d (choose a group size that divides them)",
			what, r.Shape[0], group))
	case n == maxMisfitLines+1:
		c.warn("warning: more weights stay fp16 for the same reason (anemll inspect lists them per package)")
	}
}
