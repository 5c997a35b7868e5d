package runtime

import (
	"runtime"

	"github.com/anemll/anemll/internal/gemm"
)

// minParallelMACs is the work (multiply-adds) below which kernels stay on
// one goroutine.
const minParallelMACs = gemm.MinParallelMACs

// useSIMD selects this package's AVX2/FMA/F16C kernels (when haveSIMD);
// tests switch it off, with gemm's (setSIMD), to run the plain-Go kernels
// through the same cases.
var useSIMD = haveSIMD

// dot returns Σ a[p]·b[p].
func dot(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	p := 0
	for ; p+4 <= len(a); p += 4 {
		x, y := a[p:p+4:p+4], b[p:p+4:p+4]
		s0 += x[0] * y[0]
		s1 += x[1] * y[1]
		s2 += x[2] * y[2]
		s3 += x[3] * y[3]
	}
	for ; p < len(a); p++ {
		s0 += a[p] * b[p]
	}
	return (s0 + s1) + (s2 + s3)
}

// Elementwise kernels split outputs into fixed chunks of elemChunk
// elements over the cores from minParallelElems elements on.
const (
	minParallelElems = 1 << 15
	elemChunk        = 1 << 13
)

// parallelRange runs fn(lo, hi) over [0, n) in chunks of elemChunk (one
// call for small n). Chunk bounds do not depend on the number of cores.
func parallelRange(n int, fn func(lo, hi int)) {
	if n < minParallelElems || runtime.GOMAXPROCS(0) < 2 {
		fn(0, n)
		return
	}
	chunks := (n + elemChunk - 1) / elemChunk
	gemm.ParallelFor(chunks, minParallelMACs, func(i int) {
		fn(i*elemChunk, min((i+1)*elemChunk, n))
	})
}

// gemmNNRef is the reference for gemmNN:
//
//	for i < m, j < n: c[i*n+j] = Σ_p a[i*k+p] · b[p*n+j]
//
// with fp32 accumulation.
func gemmNNRef(c, a, b []float32, m, n, k int) {
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s float32
			for p := 0; p < k; p++ {
				s += a[i*k+p] * b[p*n+j]
			}
			c[i*n+j] = s
		}
	}
}

// nnCols is the number of output columns one parallel job of gemmNN
// covers (a multiple of 8, so only the last job of a row has a plain-Go
// tail whatever the split).
const nnCols = 256

// gemmNN sets c (m×n) = a (m×k) · b (k×n), all row-major, without
// transposing b: each output row is built as Σ_p a[i,p]·b[p,:]. Above a
// size threshold the (row, nnCols-column chunk) jobs are spread over the
// cores. Each output is one fp32 sum in increasing p (fused multiply-adds
// on the SIMD path for the first n&^7 columns), whatever the split.
func gemmNN(c, a, b []float32, m, n, k int) {
	if m == 0 || n == 0 {
		return
	}
	_, _, _ = c[m*n-1], a[:m*k], b[:k*n]
	chunks := (n + nnCols - 1) / nnCols
	gemm.ParallelFor(m*chunks, min(n, nnCols)*k, func(job int) {
		i, j0 := job/chunks, job%chunks*nnCols
		j1 := min(j0+nnCols, n)
		rowNN(c[i*n+j0:i*n+j1], a[i*k:(i+1)*k], b[j0:], k, n)
	})
}

// rowNN sets c[j] = Σ_{p<k} a[p]·b[p*ldb+j] for j < len(c), k = len(a).
func rowNN(c, a, b []float32, k, ldb int) {
	n := len(c)
	a = a[:k]
	if k == 0 {
		clear(c)
		return
	}
	b = b[:(k-1)*ldb+n]
	j0 := 0
	if useSIMD && n >= 8 {
		j0 = n &^ 7
		rowNNSIMD(&c[0], &a[0], &b[0], j0, k, ldb)
	}
	if j0 == n {
		return
	}
	ct := c[j0:]
	clear(ct)
	for p, x := range a {
		br := b[p*ldb+j0 : p*ldb+n]
		for j, y := range br {
			ct[j] += x * y
		}
	}
}
