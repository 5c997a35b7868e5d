//go:build amd64 && !purego

package gemm

import "golang.org/x/sys/cpu"

// haveSIMD reports whether this build has the AVX2+FMA kernels and the CPU
// runs them.
var haveSIMD = cpu.X86.HasAVX2 && cpu.X86.HasFMA

// dot4x1SIMD sets out[r] = Σ_{p<k} ar[p]·b[p] (r < 4) for k a multiple of 8.
//
//go:noescape
func dot4x1SIMD(a0, a1, a2, a3, b *float32, k int, out *[4]float32)

// dot3x4SIMD sets out[4r+c] = Σ_{p<k} ar[p]·bc[p] (r < 3, c < 4) for k a
// multiple of 8, in the lane order of dot4x1SIMD.
//
//go:noescape
func dot3x4SIMD(a0, a1, a2, b0, b1, b2, b3 *float32, k int, out *[12]float32)
