//go:build !amd64 || purego

package gemm

// haveSIMD is false: this build has only the plain-Go kernels.
const haveSIMD = false

func dot4x1SIMD(a0, a1, a2, a3, b *float32, k int, out *[4]float32) {
	panic("gemm: no SIMD kernels in this build")
}

func dot3x4SIMD(a0, a1, a2, b0, b1, b2, b3 *float32, k int, out *[12]float32) {
	panic("gemm: no SIMD kernels in this build")
}
