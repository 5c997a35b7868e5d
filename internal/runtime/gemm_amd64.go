//go:build amd64 && !purego

package runtime

import "golang.org/x/sys/cpu"

// haveSIMD reports whether this build has the AVX2+FMA kernels and the CPU
// runs them.
var haveSIMD = cpu.X86.HasAVX2 && cpu.X86.HasFMA

// haveHalfSIMD reports whether the fp16-weight kernels (F16C) run too.
var haveHalfSIMD = haveSIMD && cpu.X86.HasF16C

// rowNNSIMD sets c[j] = Σ_{p<k} a[p]·b[p·ldb+j] for j < n, n a multiple of
// 8, with one FMA chain per output in increasing p.
//
//go:noescape
func rowNNSIMD(c, a, b *float32, n, k, ldb int)

// dot4x1HSIMD is gemm's dot4x1SIMD with the a rows as fp16 bits (needs F16C).
//
//go:noescape
func dot4x1HSIMD(a0, a1, a2, a3 *uint16, b *float32, k int, out *[4]float32)

// halfToFloatSIMD widens n fp16 values (n a multiple of 8) to fp32.
//
//go:noescape
func halfToFloatSIMD(dst *float32, src *uint16, n int)

// lut4ToFloatSIMD decodes n 4-bit LUT indices (n a multiple of 16, two per
// byte, low nibble first) through a 16-entry fp16 palette given as its low
// and high bytes, widening to fp32 (needs F16C).
//
//go:noescape
func lut4ToFloatSIMD(dst *float32, src *byte, n int, tab *[32]byte)

// lut6ToFloatSIMD decodes n 6-bit LUT indices (n a multiple of 16, four in
// three bytes, LSB first) through a 64-entry fp16 palette given as its low
// and high bytes, widening to fp32; k is lut6Consts (needs F16C).
//
//go:noescape
func lut6ToFloatSIMD(dst *float32, src *byte, n int, tab *[128]byte, k *[80]byte)

// dot4x1L4SIMD is dot4x1HSIMD with the rows as 4-bit LUT indices into one
// palette given as lut4ToFloatSIMD takes it (k a multiple of 8).
//
//go:noescape
func dot4x1L4SIMD(a0, a1, a2, a3 *byte, b *float32, k int, out *[4]float32, tab *[32]byte)

// lut6DotRowSIMD accumulates one row of 6-bit LUT indices times b into
// gemm's dot4x1SIMD's 8 lanes (n a multiple of 8).
//
//go:noescape
func lut6DotRowSIMD(a *byte, b *float32, n int, tab *[128]byte, k *[80]byte, acc *[8]float32)
