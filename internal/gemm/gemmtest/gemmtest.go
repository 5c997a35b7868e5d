// Package gemmtest holds helpers for testing fp32 matrix kernels (those of
// internal/gemm and the interpreter's own).
package gemmtest

import (
	"math"
	"math/rand/v2"
)

// DotBound returns the float64 dot product of a and b and the worst-case
// error bound of any fp32 summation order, k·2⁻²³·Σ|a·b| (plus a tiny
// absolute slack).
func DotBound(a, b []float32) (want, tol float64) {
	var abs float64
	for p := range a {
		x := float64(a[p]) * float64(b[p])
		want += x
		abs += math.Abs(x)
	}
	return want, float64(len(a)+1)*0x1p-23*abs + 1e-30
}

// Guarded returns n random floats inside a larger buffer whose elements
// just before and after are NaN, starting at an odd offset, so a kernel
// that reads outside its slice produces NaN.
func Guarded(r *rand.Rand, n int) []float32 {
	buf := make([]float32, n+11)
	for i := range buf {
		buf[i] = float32(math.NaN())
	}
	s := buf[3 : 3+n : 3+n]
	for i := range s {
		s[i] = float32(r.NormFloat64())
	}
	return s
}
