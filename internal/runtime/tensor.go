// Package runtime is a CPU interpreter for MIL programs (internal/mil) that
// follows Core ML's fp16 numerics: fp16 tensors hold half values, each op
// computes in fp32 and rounds its fp16 outputs to half (nearest even).
//
// Load prepares a program once; Function.Predict runs one function on
// named inputs and an optional State (the iOS18 stateful-model KV cache),
// updated in place.
//
// Memory: large weights stay as the package stores them. An fp16 weight
// of linear, 1×1 conv or gather is kept as half bits (the bytes read from
// the weight file), a palettized one (constexpr_lut_to_dense) as its
// bit-packed indices and palettes; the kernels widen rows to fp32 as they
// go (exactly), so no fp32 copy of a weight is ever held. Other constants
// are decoded to fp32 once. Activation buffers are shared between values
// whose lifetimes do not overlap, so a call's working set is the values
// live at once.
//
// Matrix products (linear, conv, matmul) accumulate in fp32. On amd64 CPUs
// with AVX2 and FMA they run hand-written SIMD kernels (gemm_amd64.s; the
// purego build tag or another architecture gives the plain-Go kernels),
// with F16C reading fp16 weights and decoding 4-bit LUT indices directly.
// Each output of a product is summed
// in one fixed order (see dot4x1), and parallel work is cut into fixed
// chunks, so results are bit-identical from run to run and for any
// GOMAXPROCS on a given machine (the SIMD and plain-Go orders differ
// within fp32 rounding).
//
// Integer semantics that Core ML does not document are chosen as numpy's
// astype does them (the value inference coremltools uses): int→int16, int8,
// uint8 and uint16 casts wrap (two's complement truncation), float→int casts
// truncate toward zero and saturate at the int32 range before wrapping (NaN
// becomes 0), casts to bool give x != 0. gather and gather_along_axis reject
// negative or out-of-range indices with an error, as iOS17+ requires
// non-negative indices.
package runtime

import (
	"fmt"
	"math"

	"github.com/anemll/anemll/internal/fp16"
	"github.com/anemll/anemll/internal/mil"
)

// Tensor is a dense row-major tensor.
//
// Floating-point tensors (DType mil.Float16 or mil.Float32) keep their
// elements in F; an fp16 tensor's values are always exactly representable
// halves. Integer and bool tensors (mil.Int32, Int16, Int8, UInt8, UInt16,
// Bool and, for constants only, sub-byte types) keep their elements in I,
// already wrapped to the dtype's range (bool is 0 or 1). String constants
// keep S. A rank-0 tensor (scalar) has an empty Shape and one element.
//
// Tensors returned by Predict belong to the caller; tensors passed in are
// only read.
type Tensor struct {
	DType mil.DType
	Shape []int
	F     []float32
	I     []int32
	S     []string

	// half holds the values of an fp16 tensor as half bits, F then nil: an
	// fp16 matrix weight Load prepared for the fp16-weight kernels (see
	// packHalfWeights; only constants that nothing but linear and conv
	// weights read get it), or an fp16 state (see State) and the views of
	// it. Kernels that do not read half are given a widened copy (see
	// node.widen).
	half []uint16
	// lut holds a palettized fp16 weight as packed indices and palettes
	// (see lutWeight) for the same kernels; F is then nil.
	lut *lutWeight
	// pending is set on a large fp16 constant between loading and
	// materialize, which decides its form from its uses.
	pending *pendingConst
}

// NewFloat16 returns an fp16 tensor of shape holding data rounded to half.
// data is copied. It panics if len(data) does not match shape (a programmer
// error).
func NewFloat16(shape []int, data []float32) *Tensor {
	t := &Tensor{DType: mil.Float16, Shape: cloneInts(shape), F: append([]float32(nil), data...)}
	mustLen(t, len(data))
	roundHalf(t.F)
	return t
}

// NewFloat32 returns an fp32 tensor of shape holding a copy of data.
func NewFloat32(shape []int, data []float32) *Tensor {
	t := &Tensor{DType: mil.Float32, Shape: cloneInts(shape), F: append([]float32(nil), data...)}
	mustLen(t, len(data))
	return t
}

// NewInt32 returns an int32 tensor of shape holding a copy of data.
func NewInt32(shape []int, data []int32) *Tensor {
	t := &Tensor{DType: mil.Int32, Shape: cloneInts(shape), I: append([]int32(nil), data...)}
	mustLen(t, len(data))
	return t
}

// NewBool returns a bool tensor of shape.
func NewBool(shape []int, data []bool) *Tensor {
	t := &Tensor{DType: mil.Bool, Shape: cloneInts(shape), I: make([]int32, len(data))}
	mustLen(t, len(data))
	for i, b := range data {
		if b {
			t.I[i] = 1
		}
	}
	return t
}

// Zeros returns a zero tensor of dt (fp16, fp32 or an integer/bool type)
// and shape.
func Zeros(dt mil.DType, shape []int) *Tensor {
	t := &Tensor{DType: dt, Shape: cloneInts(shape)}
	n := numel(shape)
	if isFloat(dt) {
		t.F = make([]float32, n)
	} else {
		t.I = make([]int32, n)
	}
	return t
}

func mustLen(t *Tensor, n int) {
	if numel(t.Shape) != n {
		panic(fmt.Sprintf("runtime: %d values for shape %v", n, t.Shape))
	}
}

// Len returns the number of elements.
func (t *Tensor) Len() int { return numel(t.Shape) }

// Rank returns the number of dimensions.
func (t *Tensor) Rank() int { return len(t.Shape) }

// IsFloat reports whether t holds fp16 or fp32 values (in F).
func (t *Tensor) IsFloat() bool { return isFloat(t.DType) }

// Float32s returns the elements as float32 (a copy; integers converted).
func (t *Tensor) Float32s() []float32 {
	if t.IsFloat() {
		return append([]float32(nil), t.F...)
	}
	out := make([]float32, len(t.I))
	for i, v := range t.I {
		out[i] = float32(v)
	}
	return out
}

// Int32s returns the elements as int32 (a copy; floats truncated toward
// zero and saturated).
func (t *Tensor) Int32s() []int32 {
	if !t.IsFloat() {
		return append([]int32(nil), t.I...)
	}
	out := make([]int32, len(t.F))
	for i, v := range t.F {
		out[i] = floatToInt32(v)
	}
	return out
}

// Halfs returns an fp16 tensor's elements as half bit patterns.
func (t *Tensor) Halfs() []uint16 {
	out := make([]uint16, len(t.F))
	for i, v := range t.F {
		out[i] = uint16(fp16.FromFloat32(v))
	}
	return out
}

// Clone returns a deep copy of t, its fp16 values held in F however t
// stores them.
func (t *Tensor) Clone() *Tensor {
	c := &Tensor{DType: t.DType, Shape: cloneInts(t.Shape)}
	if t.F != nil {
		c.F = append([]float32(nil), t.F...)
	} else if t.half != nil {
		c.F = make([]float32, len(t.half))
		halfToFloat(c.F, t.half)
	}
	if t.I != nil {
		c.I = append([]int32(nil), t.I...)
	}
	if t.S != nil {
		c.S = append([]string(nil), t.S...)
	}
	return c
}

// String summarises t's type, e.g. "tensor<fp16, [1, 1, 64]>".
func (t *Tensor) String() string {
	return fmt.Sprintf("tensor<%s, %v>", t.DType, t.Shape)
}

func isFloat(dt mil.DType) bool { return dt == mil.Float16 || dt == mil.Float32 }

func numel(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

func cloneInts(s []int) []int { return append(make([]int, 0, len(s)), s...) }

// floatToInt32 truncates toward zero, saturating at the int32 range; NaN
// gives 0.
func floatToInt32(f float32) int32 {
	switch {
	case f != f:
		return 0
	case f >= 2147483647:
		return math.MaxInt32
	case f <= -2147483648:
		return math.MinInt32
	}
	return int32(f)
}

// wrapInt converts v to dt's range the way a two's-complement truncation
// does (bool: v != 0).
func wrapInt(dt mil.DType, v int32) int32 {
	switch dt {
	case mil.Int16:
		return int32(int16(v))
	case mil.Int8:
		return int32(int8(v))
	case mil.UInt8:
		return int32(uint8(v))
	case mil.UInt16:
		return int32(uint16(v))
	case mil.Bool:
		if v != 0 {
			return 1
		}
		return 0
	}
	return v
}

// roundHalf rounds every value of f to the nearest half (ties to even) in
// place. Normal-range values take a bit-twiddling path; subnormals,
// overflow, Inf and NaN go through fp16.Round.
func roundHalf(f []float32) {
	for i, v := range f {
		f[i] = round1(v)
	}
}

// floatToHalf stores the fp16 values src (exact halves) as half bits.
func floatToHalf(dst []uint16, src []float32) {
	dst = dst[:len(src)]
	for i, v := range src {
		dst[i] = uint16(fp16.FromFloat32(v))
	}
}

// round1 rounds one value to half precision.
func round1(v float32) float32 {
	b := math.Float32bits(v)
	e := (b >> 23) & 0xff
	// Half normals: exponent 2^-14 .. 2^15 → float32 biased 113..142.
	// (Unsigned e-113 ≤ 29 is 113 ≤ e ≤ 142 in one compare.)
	if e-113 <= 142-113 {
		b += 0xfff + (b>>13)&1
		b &^= 0x1fff
		// Rounding up past the largest half (exponent 2^16, or 65520
		// and above) overflows to Inf: let fp16.Round decide.
		if b&0x7fffffff > 0x477fe000 {
			return fp16.Round(v)
		}
		return math.Float32frombits(b)
	}
	if b&0x7fffffff == 0 {
		return v
	}
	return fp16.Round(v)
}
