//go:build !amd64 || purego

package runtime

// haveSIMD is false: this build has only the plain-Go kernels.
const haveSIMD = false

// haveHalfSIMD is false: no fp16-weight kernels in this build.
const haveHalfSIMD = false

func rowNNSIMD(c, a, b *float32, n, k, ldb int) {
	panic("runtime: no SIMD kernels in this build")
}

func dot4x1HSIMD(a0, a1, a2, a3 *uint16, b *float32, k int, out *[4]float32) {
	panic("runtime: no SIMD kernels in this build")
}

func halfToFloatSIMD(dst *float32, src *uint16, n int) {
	panic("runtime: no SIMD kernels in this build")
}

func lut4ToFloatSIMD(dst *float32, src *byte, n int, tab *[32]byte) {
	panic("runtime: no SIMD kernels in this build")
}

func lut6ToFloatSIMD(dst *float32, src *byte, n int, tab *[128]byte, k *[80]byte) {
	panic("runtime: no SIMD kernels in this build")
}

func dot4x1L4SIMD(a0, a1, a2, a3 *byte, b *float32, k int, out *[4]float32, tab *[32]byte) {
	panic("runtime: no SIMD kernels in this build")
}

func lut6DotRowSIMD(a *byte, b *float32, n int, tab *[128]byte, k *[80]byte, acc *[8]float32) {
	panic("runtime: no SIMD kernels in this build")
}
