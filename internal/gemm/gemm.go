// Package gemm holds the fp32 matrix kernels shared by the Core ML
// interpreter (internal/runtime) and the reference forward pass's fast mode
// (internal/reference with Options.Fast, used for calibration statistics):
// c = a·bᵀ for row-major a and b, with AVX2+FMA kernels where the CPU has
// them and plain Go elsewhere.
//
// Every output is accumulated in one order that depends only on the inner
// dimension k (see Dot4x1), whichever kernel computes it and however the
// work is split over cores, so results are deterministic for any number of
// workers.
package gemm

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// MinParallelMACs is the work (multiply-adds) below which kernels stay on
// one goroutine.
const MinParallelMACs = 1 << 16

// NTRef is the reference for NT:
//
//	for i < m, j < n: c[i*n+j] = Σ_p a[i*k+p] · b[j*k+p]
//
// with fp32 accumulation.
func NTRef(c, a, b []float32, m, n, k int) {
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s float32
			for p := 0; p < k; p++ {
				s += a[i*k+p] * b[j*k+p]
			}
			c[i*n+j] = s
		}
	}
}

// step is the number of rows (of a or b) one parallel job of NT
// covers: a multiple of the 3- and 4-row kernel blocks.
const step = 48

// NT sets c (m×n) = a (m×k) · bᵀ where b is n×k, both row-major, with
// fp32 accumulation in the order Dot4x1 documents. Above a size threshold
// the larger of the two row counts is cut into jobs of step rows that
// the cores take in turn; no result depends on the split.
func NT(c, a, b []float32, m, n, k int) {
	if m == 0 || n == 0 {
		return
	}
	_, _, _ = c[m*n-1], a[:m*k], b[:n*k]
	if m >= n {
		ParallelFor((m+step-1)/step, step*n*k, func(job int) {
			Tile(c, n, 1, a, b, k, job*step, min((job+1)*step, m), 0, n)
		})
		return
	}
	ParallelFor((n+step-1)/step, step*m*k, func(job int) {
		Tile(c, n, 1, a, b, k, 0, m, job*step, min((job+1)*step, n))
	})
}

// Tile sets c[i*si+j*sj] = Σ_{p<k} a[i*k+p]·b[j*k+p] for i0 ≤ i < i1
// and j0 ≤ j < j1.
//
// Every output is accumulated in one order that depends only on k (see
// Dot4x1), whichever kernel computes it, so how the caller splits the
// work never changes a result. SIMD: blocks of 3 rows of a by 4 rows of b
// (dot3x4), or of 4 rows of a by one row of b when there are fewer than 4
// b rows (matrix-vector). Plain Go: blocks of 4 rows by 2. Leftover rows
// of a go one at a time against 4 rows of b (Dot4x1).
func Tile(c []float32, si, sj int, a, b []float32, k, i0, i1, j0, j1 int) {
	row := func(x []float32, i int) []float32 { return x[i*k : i*k+k] }
	i := i0
	switch {
	case useSIMD && j1-j0 >= 4:
		for ; i+3 <= i1; i += 3 {
			a0, a1, a2 := row(a, i), row(a, i+1), row(a, i+2)
			j := j0
			for ; j+4 <= j1; j += 4 {
				s := dot3x4(a0, a1, a2, row(b, j), row(b, j+1), row(b, j+2), row(b, j+3))
				for r := 0; r < 3; r++ {
					o := (i+r)*si + j*sj
					c[o], c[o+sj], c[o+2*sj], c[o+3*sj] = s[4*r], s[4*r+1], s[4*r+2], s[4*r+3]
				}
			}
			for ; j < j1; j++ {
				s := Dot4x1(a0, a1, a2, a2, row(b, j))
				o := i*si + j*sj
				c[o], c[o+si], c[o+2*si] = s[0], s[1], s[2]
			}
		}
	case useSIMD:
		for ; i+4 <= i1; i += 4 {
			a0, a1, a2, a3 := row(a, i), row(a, i+1), row(a, i+2), row(a, i+3)
			for j := j0; j < j1; j++ {
				s := Dot4x1(a0, a1, a2, a3, row(b, j))
				o := i*si + j*sj
				c[o], c[o+si], c[o+2*si], c[o+3*si] = s[0], s[1], s[2], s[3]
			}
		}
	default:
		for ; i+4 <= i1; i += 4 {
			a0, a1, a2, a3 := row(a, i), row(a, i+1), row(a, i+2), row(a, i+3)
			j := j0
			for ; j+2 <= j1; j += 2 {
				s := dot4x2(a0, a1, a2, a3, row(b, j), row(b, j+1))
				for r := 0; r < 4; r++ {
					o := (i+r)*si + j*sj
					c[o], c[o+sj] = s[2*r], s[2*r+1]
				}
			}
			for ; j < j1; j++ {
				s := Dot4x1(a0, a1, a2, a3, row(b, j))
				o := i*si + j*sj
				c[o], c[o+si], c[o+2*si], c[o+3*si] = s[0], s[1], s[2], s[3]
			}
		}
	}
	for ; i < i1; i++ {
		a0 := row(a, i)
		j := j0
		for ; j+4 <= j1; j += 4 {
			s := Dot4x1(row(b, j), row(b, j+1), row(b, j+2), row(b, j+3), a0)
			o := i*si + j*sj
			c[o], c[o+sj], c[o+2*sj], c[o+3*sj] = s[0], s[1], s[2], s[3]
		}
		for ; j < j1; j++ {
			c[i*si+j*sj] = Dot4x1(a0, a0, a0, a0, row(b, j))[0]
		}
	}
}

// dot3x4 returns the 12 dot products of a0..a2 with b0..b3 (row-major
// [a][b]); all slices must have len(a0) elements. Accumulation order as
// Dot4x1.
func dot3x4(a0, a1, a2, b0, b1, b2, b3 []float32) [12]float32 {
	k := len(a0)
	a1, a2, b0, b1, b2, b3 = a1[:k], a2[:k], b0[:k], b1[:k], b2[:k], b3[:k]
	var s [12]float32
	k8 := 0
	if useSIMD && k >= 8 {
		k8 = k &^ 7
		dot3x4SIMD(&a0[0], &a1[0], &a2[0], &b0[0], &b1[0], &b2[0], &b3[0], k8, &s)
	}
	for p := k8; p < k; p++ {
		x0, x1, x2 := a0[p], a1[p], a2[p]
		y0, y1, y2, y3 := b0[p], b1[p], b2[p], b3[p]
		s[0] += x0 * y0
		s[1] += x0 * y1
		s[2] += x0 * y2
		s[3] += x0 * y3
		s[4] += x1 * y0
		s[5] += x1 * y1
		s[6] += x1 * y2
		s[7] += x1 * y3
		s[8] += x2 * y0
		s[9] += x2 * y1
		s[10] += x2 * y2
		s[11] += x2 * y3
	}
	return s
}

// useSIMD selects the AVX2+FMA kernels (when haveSIMD); tests switch it
// off with SetSIMD to run the plain-Go kernels through the same cases.
var useSIMD = haveSIMD

// SIMD reports whether the AVX2+FMA kernels are in use.
func SIMD() bool { return useSIMD }

// SetSIMD selects the SIMD kernels (on, where this build and CPU have
// them) or the plain-Go ones, and returns the previous setting. It is for
// tests; it must not be called while kernels run.
func SetSIMD(on bool) (prev bool) {
	prev, useSIMD = useSIMD, on && haveSIMD
	return prev
}

// dot4x2 returns the 8 dot products of a0..a3 with b0, b1 (row-major
// [a][b]), one fp32 sum per output in increasing p (the plain-Go block
// kernel; all slices must have len(a0) elements).
func dot4x2(a0, a1, a2, a3, b0, b1 []float32) [8]float32 {
	k := len(a0)
	a1, a2, a3, b0, b1 = a1[:k], a2[:k], a3[:k], b0[:k], b1[:k]
	var s00, s01, s10, s11, s20, s21, s30, s31 float32
	for p := 0; p < k; p++ {
		x0, x1, x2, x3 := a0[p], a1[p], a2[p], a3[p]
		y0, y1 := b0[p], b1[p]
		s00 += x0 * y0
		s01 += x0 * y1
		s10 += x1 * y0
		s11 += x1 * y1
		s20 += x2 * y0
		s21 += x2 * y1
		s30 += x3 * y0
		s31 += x3 * y1
	}
	return [8]float32{s00, s01, s10, s11, s20, s21, s30, s31}
}

// Dot4x1 returns the dot products of a0..a3 with b (each len(b) long).
//
// Accumulation order (shared by every gemm kernel): with SIMD and k ≥ 8,
// lane l of an 8-wide FMA accumulator sums the terms p ≡ l (mod 8) of the
// first k&^7 terms in increasing p, the lanes are added as
// ((l0+l4)+(l1+l5)) + ((l2+l6)+(l3+l7)), and the k%8 remaining terms are
// added one by one. Otherwise one fp32 sum per output in increasing p.
func Dot4x1(a0, a1, a2, a3, b []float32) [4]float32 {
	k := len(b)
	a0, a1, a2, a3 = a0[:k], a1[:k], a2[:k], a3[:k]
	if !useSIMD || k < 8 {
		return dot4x1Go(a0, a1, a2, a3, b)
	}
	var s [4]float32
	k8 := k &^ 7
	dot4x1SIMD(&a0[0], &a1[0], &a2[0], &a3[0], &b[0], k8, &s)
	for p := k8; p < k; p++ {
		y := b[p]
		s[0] += a0[p] * y
		s[1] += a1[p] * y
		s[2] += a2[p] * y
		s[3] += a3[p] * y
	}
	return s
}

// dot4x1Go is the plain-Go Dot4x1: one sum per output, increasing p.
func dot4x1Go(a0, a1, a2, a3, b []float32) [4]float32 {
	k := len(b)
	a0, a1, a2, a3 = a0[:k], a1[:k], a2[:k], a3[:k]
	var s0, s1, s2, s3 float32
	for p := 0; p < k; p++ {
		y := b[p]
		s0 += a0[p] * y
		s1 += a1[p] * y
		s2 += a2[p] * y
		s3 += a3[p] * y
	}
	return [4]float32{s0, s1, s2, s3}
}

// ParallelFor runs fn(i) for i < n over the available cores when the total
// work (n·per multiply-adds) is large enough, else serially. Jobs are
// handed out in index order from a shared counter.
func ParallelFor(n, per int, fn func(i int)) {
	workers := min(runtime.GOMAXPROCS(0), n)
	if workers < 2 || n*per < MinParallelMACs {
		for i := 0; i < n; i++ {
			fn(i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	work := func() {
		for {
			i := int(next.Add(1) - 1)
			if i >= n {
				return
			}
			fn(i)
		}
	}
	wg.Add(workers - 1)
	for w := 1; w < workers; w++ {
		go func() {
			defer wg.Done()
			work()
		}()
	}
	work()
	wg.Wait()
}
