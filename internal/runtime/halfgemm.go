package runtime

import (
	"encoding/binary"
	"fmt"
	"sync"
	"unsafe"

	"github.com/anemll/anemll/internal/fp16"
	"github.com/anemll/anemll/internal/gemm"
	"github.com/anemll/anemll/internal/mil"
)

// halfWeights makes Load keep large fp16 matrix weights as the package
// stores them: half bits (Tensor.half), or packed LUT indices and palettes
// (Tensor.lut), widened to fp32 inside the matrix kernels. Tests turn it
// off to compare with weights held as fp32.
var halfWeights = true

// halfWeightMin is the smallest weight (in elements) materialize keeps
// packed: smaller ones stay in cache, where fp32 is as fast.
var halfWeightMin = 4096

// halfRows is the number of weight rows one parallel job of gemmHalf
// covers (fixed, so the split does not depend on the number of cores).
const halfRows = 64

// pendingConst is a large fp16 constant whose form Load decides once every
// function is loaded: a stored fp16 value, or a palettized weight.
type pendingConst struct {
	name string
	val  *mil.Value
	lut  *lutSpec
}

// materialize gives every pending constant of fns its form. A constant of
// rank ≥ 2 with at least halfWeightMin elements that is only ever bound to
// the weight of linear ops, of convs that take opConv's 1×1 path (see
// conv1x1), or to the x of gather, and is no function output, stays packed:
// fp16 values as half bits, LUT weights as indices and palettes when their
// tables run along the first dimension only (else dequantized to half
// bits). Every other constant is decoded to fp32 values. Constants are
// shared across functions, so all functions of a model are scanned
// together; the bytes of each are read once, one constant at a time.
func materialize(fns []*Function) error {
	ok := map[*Tensor]bool{}
	mark := func(t *Tensor, use bool) {
		if prev, seen := ok[t]; !seen || prev {
			ok[t] = use
		}
	}
	for _, fn := range fns {
		for _, s := range fn.outSlot {
			if t := fn.consts[s]; t != nil {
				mark(t, false)
			}
		}
		for _, n := range fn.nodes {
			for p, ss := range n.args {
				for _, s := range ss {
					if t := fn.consts[s]; t != nil {
						mark(t, packedUse(fn, n, p, t))
					}
				}
			}
		}
	}
	for _, fn := range fns {
		for _, t := range fn.consts {
			if t == nil || t.pending == nil {
				continue
			}
			pc := t.pending
			if err := t.resolve(halfWeights && ok[t] && t.Rank() >= 2 && t.Len() >= halfWeightMin); err != nil {
				return fmt.Errorf("runtime: function %q: const %q: %w", fn.name, pc.name, err)
			}
		}
	}
	return nil
}

// packedUse reports whether binding constant t to param p of node n is a
// use the kernels serve from packed weights.
func packedUse(fn *Function, n *node, p string, t *Tensor) bool {
	switch n.op.Type {
	case "linear":
		return p == "weight"
	case "conv":
		return p == "weight" && conv1x1(fn, n, t)
	case "gather":
		return p == "x"
	}
	return false
}

// resolve reads a pending constant into its packed form (pack) or into
// fp32 values.
func (t *Tensor) resolve(pack bool) error {
	pc := t.pending
	t.pending = nil
	if pc.lut != nil {
		if pack {
			if w := pc.lut.weight(); w != nil {
				t.lut = w
				return nil
			}
		}
		d, err := pc.lut.dense()
		if err != nil {
			return err
		}
		if pack {
			t.half = make([]uint16, len(d.F))
			for i, v := range d.F {
				t.half[i] = uint16(fp16.FromFloat32(v)) // exact: palettes are halves
			}
		} else {
			t.F = d.F
		}
		return nil
	}
	if !pack {
		d, err := decodeValue(pc.val)
		if err != nil {
			return err
		}
		t.F = d.F
		return nil
	}
	b, err := pc.val.Bytes()
	if err != nil {
		return err
	}
	if err := pc.val.CheckSize(b); err != nil {
		return err
	}
	t.half = halfBits(b)
	return nil
}

// littleEndian reports whether this machine stores a uint16 low byte first.
var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// halfBits returns the fp16 values of canonical little-endian bytes b as
// bit patterns: b itself reinterpreted when the machine is little-endian
// and b 2-aligned (no copy, so loading a weight needs no second buffer),
// else a decoded copy. The caller must not modify b afterwards.
func halfBits(b []byte) []uint16 {
	if len(b) >= 2 && littleEndian && uintptr(unsafe.Pointer(&b[0]))%2 == 0 {
		return unsafe.Slice((*uint16)(unsafe.Pointer(&b[0])), len(b)/2)
	}
	h := make([]uint16, len(b)/2)
	for i := range h {
		h[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return h
}

// conv1x1 reports whether conv node n with constant weight w always takes
// opConv's 1×1 path: a 1×1 kernel, and groups, strides and padding that
// are constants (or absent) with the values that path needs (groups 1,
// strides 1, no padding). Other convs run convDirect on fp32 weights, so
// packing their weights would make every call widen them.
func conv1x1(fn *Function, n *node, w *Tensor) bool {
	if r := w.Rank(); r != 3 && r != 4 {
		return false
	}
	for _, k := range w.Shape[2:] {
		if k != 1 {
			return false
		}
	}
	// param returns the constant bound to p (nil if absent) and whether
	// it is absent or constant.
	param := func(p string) (*Tensor, bool) {
		ss := n.args[p]
		if len(ss) == 0 {
			return nil, true
		}
		t := fn.consts[ss[0]]
		return t, t != nil
	}
	allInts := func(p string, want int32) bool {
		t, ok := param(p)
		if !ok || t != nil && (t.IsFloat() || t.DType == mil.String) {
			return false
		}
		if t != nil {
			for _, v := range t.I {
				if v != want {
					return false
				}
			}
		}
		return true
	}
	if !allInts("groups", 1) || !allInts("strides", 1) {
		return false
	}
	pt, ok := param("pad_type")
	if !ok {
		return false
	}
	switch {
	case pt == nil:
		return true // valid
	case pt.DType != mil.String || len(pt.S) != 1:
		return false
	case pt.S[0] == "custom":
		return allInts("pad", 0)
	default:
		// valid, or same/same_lower, which pad nothing at stride 1 with a
		// 1×1 kernel.
		return pt.S[0] == "valid" || pt.S[0] == "same" || pt.S[0] == "same_lower"
	}
}

// weightFloats returns w's values as fp32: w.F, or a widened copy of an
// fp16-packed weight. packHalfWeights packs only weights whose kernels
// read half bits, so the copy is a fallback, not a per-call path.
func weightFloats(w *Tensor) []float32 {
	switch {
	case w.F != nil:
		return w.F
	case w.half != nil:
		f := make([]float32, len(w.half))
		halfToFloat(f, w.half)
		return f
	case w.lut != nil:
		f := make([]float32, w.Len())
		w.lut.widen(f, 0)
		return f
	}
	return w.F
}

// packedRows is a weight matrix in a packed form: half bits or a LUT.
type packedRows struct {
	half []uint16
	lut  *lutWeight
}

// packedOf returns t's packed form, if it has one.
func packedOf(t *Tensor) (packedRows, bool) {
	return packedRows{half: t.half, lut: t.lut}, t.half != nil || t.lut != nil
}

// widen sets dst (len (r1−r0)·k) to rows r0..r1 of the k-column matrix.
func (w packedRows) widen(dst []float32, r0, r1, k int) {
	if w.lut != nil {
		w.lut.widen(dst[:(r1-r0)*k], r0*k)
		return
	}
	halfToFloat(dst[:(r1-r0)*k], w.half[r0*k:r1*k])
}

// halfToFloat widens len(src) fp16 values into dst (exact).
func halfToFloat(dst []float32, src []uint16) {
	dst = dst[:len(src)]
	i := 0
	if useSIMD && haveHalfSIMD && len(src) >= 8 {
		i = len(src) &^ 7
		halfToFloatSIMD(&dst[0], &src[0], i)
	}
	for ; i < len(src); i++ {
		dst[i] = fp16.Bits(src[i]).Float32()
	}
}

// dot4x1H is dot4x1 with the a rows as fp16 bits: the same results as
// dot4x1 on the widened rows. tmp must hold 4·len(b) floats (used by the
// plain-Go path).
func dot4x1H(a0, a1, a2, a3 []uint16, b, tmp []float32) [4]float32 {
	k := len(b)
	a0, a1, a2, a3 = a0[:k], a1[:k], a2[:k], a3[:k]
	if !useSIMD || !haveHalfSIMD || k < 8 {
		f := tmp[:4*k]
		halfToFloat(f[:k], a0)
		halfToFloat(f[k:2*k], a1)
		halfToFloat(f[2*k:3*k], a2)
		halfToFloat(f[3*k:], a3)
		return gemm.Dot4x1(f[:k], f[k:2*k], f[2*k:3*k], f[3*k:], b)
	}
	var s [4]float32
	k8 := k &^ 7
	dot4x1HSIMD(&a0[0], &a1[0], &a2[0], &a3[0], &b[0], k8, &s)
	for p := k8; p < k; p++ {
		y := b[p]
		s[0] += fp16.Bits(a0[p]).Float32() * y
		s[1] += fp16.Bits(a1[p]).Float32() * y
		s[2] += fp16.Bits(a2[p]).Float32() * y
		s[3] += fp16.Bits(a3[p]).Float32() * y
	}
	return s
}

// halfScratch holds per-job buffers for widened weight rows.
var halfScratch = sync.Pool{New: func() any { return new([]float32) }}

// halfWiden is the number of weight rows gemmHalf widens to fp32 at a
// time when there are several activation rows to reuse them for.
const halfWiden = 12

// gemmHalf multiplies an fp16 weight w (nw×k, half bits) by activations x
// (nx×k), both row-major with k contiguous: out(iw, jx) = Σ_p w[iw,p]·x[jx,p]
// goes to c[iw*nx+jx] when wRows (conv: Cout×T) and to c[jx*nw+iw]
// otherwise (linear: T×N).
//
// For one activation row the fp16 kernel reads 4 weight rows' halves
// directly; for more, halfWiden rows at a time are widened once and
// reused through gemmTile. Each output is accumulated in the order dot4x1
// documents, so the results equal those of the same product on fp32
// weights and do not depend on the number of cores.
func gemmHalf(c []float32, w []uint16, x []float32, nw, nx, k int, wRows bool) {
	gemmPacked(c, packedRows{half: w}, x, nw, nx, k, wRows)
}

// gemmPacked is gemmHalf for a weight in any packed form; a LUT weight's
// rows are decoded to fp32 (four, or halfWiden, at a time) and multiplied
// by the fp32 kernels, which gives the results gemmHalf gives on the same
// weight as half bits.
func gemmPacked(c []float32, w packedRows, x []float32, nw, nx, k int, wRows bool) {
	if nw == 0 || nx == 0 {
		return
	}
	_, _ = c[nw*nx-1], x[:nx*k]
	if w.lut == nil {
		_ = w.half[:nw*k]
	} else if w.lut.rows != nw || w.lut.k != k {
		panic("runtime: LUT weight shape mismatch")
	}
	jobs := (nw + halfRows - 1) / halfRows
	gemm.ParallelFor(jobs, halfRows*nx*k, func(job int) {
		tp := halfScratch.Get().(*[]float32)
		if cap(*tp) < halfWiden*k {
			*tp = make([]float32, halfWiden*k)
		}
		halfBlock(c, w, x, nw, nx, k, job*halfRows, min((job+1)*halfRows, nw), wRows, (*tp)[:halfWiden*k])
		halfScratch.Put(tp)
	})
}

// halfBlock computes the outputs of weight rows i0..i1 for gemmHalf; tmp
// holds halfWiden·k floats.
func halfBlock(c []float32, w packedRows, x []float32, nw, nx, k, i0, i1 int, wRows bool, tmp []float32) {
	si, sj := 1, nw // c strides of a weight row and an activation row
	if wRows {
		si, sj = nx, 1
	}
	i := i0
	if nx == 1 {
		for ; i+4 <= i1; i += 4 {
			var s [4]float32
			if h := w.half; h != nil {
				s = dot4x1H(h[i*k:(i+1)*k], h[(i+1)*k:(i+2)*k], h[(i+2)*k:(i+3)*k], h[(i+3)*k:(i+4)*k], x[:k], tmp)
			} else if w.lut.fused4(i) {
				s = w.lut.dot4x1(i, x[:k])
			} else if w.lut.fused6(i) {
				s = w.lut.dot4x1L6(i, x[:k])
			} else {
				w.widen(tmp[:4*k], i, i+4, k)
				s = gemm.Dot4x1(tmp[:k], tmp[k:2*k], tmp[2*k:3*k], tmp[3*k:4*k], x[:k])
			}
			c[i*si], c[(i+1)*si], c[(i+2)*si], c[(i+3)*si] = s[0], s[1], s[2], s[3]
		}
	}
	for ; i < i1; i += halfWiden {
		e := min(i+halfWiden, i1)
		w.widen(tmp[:(e-i)*k], i, e, k)
		gemm.Tile(c[i*si:], si, sj, tmp, x, k, 0, e-i, 0, nx)
	}
}
