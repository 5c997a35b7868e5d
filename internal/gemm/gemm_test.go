package gemm

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/anemll/anemll/internal/gemm/gemmtest"
)

func randF(r *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	return x
}

func testDotKernels(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for _, k := range []int{0, 1, 3, 7, 8, 9, 15, 16, 17, 31, 64, 100, 1001, 2048} {
		a := [][]float32{gemmtest.Guarded(r, k), gemmtest.Guarded(r, k), gemmtest.Guarded(r, k), gemmtest.Guarded(r, k)}
		b := [][]float32{gemmtest.Guarded(r, k), gemmtest.Guarded(r, k)}
		b = append(b, gemmtest.Guarded(r, k), gemmtest.Guarded(r, k))
		s8 := dot4x2(a[0], a[1], a[2], a[3], b[0], b[1])
		s12 := dot3x4(a[0], a[1], a[2], b[0], b[1], b[2], b[3])
		s4 := Dot4x1(a[0], a[1], a[2], a[3], b[1])
		s4go := dot4x1Go(a[0], a[1], a[2], a[3], b[1])
		for ri := 0; ri < 4; ri++ {
			for c := 0; c < 2; c++ {
				want, tol := gemmtest.DotBound(a[ri], b[c])
				if got := float64(s8[2*ri+c]); math.Abs(got-want) > tol {
					t.Errorf("k=%d dot4x2[%d][%d] = %v, want %v ± %g", k, ri, c, got, want, tol)
				}
			}
			want, tol := gemmtest.DotBound(a[ri], b[1])
			if got := float64(s4[ri]); math.Abs(got-want) > tol {
				t.Errorf("k=%d Dot4x1[%d] = %v, want %v ± %g", k, ri, got, want, tol)
			}
			// dot4x2 is the plain-Go block kernel: the same sequential
			// order as dot4x1Go.
			if s4go[ri] != s8[2*ri+1] {
				t.Errorf("k=%d row %d: dot4x1Go %v != dot4x2 %v", k, ri, s4go[ri], s8[2*ri+1])
			}
			if ri == 3 {
				continue
			}
			for c := 0; c < 4; c++ {
				want, tol := gemmtest.DotBound(a[ri], b[c])
				if got := float64(s12[4*ri+c]); math.Abs(got-want) > tol {
					t.Errorf("k=%d dot3x4[%d][%d] = %v, want %v ± %g", k, ri, c, got, want, tol)
				}
			}
			// dot3x4 and dot4x1 share one accumulation order: they agree
			// bit for bit, on either path.
			if s4[ri] != s12[4*ri+1] {
				t.Errorf("k=%d row %d: Dot4x1 %v != dot3x4 %v", k, ri, s4[ri], s12[4*ri+1])
			}
		}
	}
}

func TestDotKernels(t *testing.T) { testDotKernels(t) }

func testNTAgainstNaive(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, sz := range [][3]int{{1, 1, 1}, {1, 7, 3}, {5, 1, 9}, {3, 5, 0}, {7, 9, 13}, {64, 130, 33}, {257, 3, 64}, {1, 1000, 70}, {130, 129, 17}} {
		m, n, k := sz[0], sz[1], sz[2]
		a, b := randF(r, m*k), randF(r, n*k)
		want := make([]float32, m*n)
		NTRef(want, a, b, m, n, k)
		got := make([]float32, m*n)
		for i := range got {
			got[i] = 12345 // must be overwritten
		}
		NT(got, a, b, m, n, k)
		for i := range want {
			if d := got[i] - want[i]; d > 1e-4*float32(k+1) || d < -1e-4*float32(k+1) {
				t.Fatalf("%v: c[%d] = %v, want %v", sz, i, got[i], want[i])
			}
		}
	}
}

func TestNTAgainstNaive(t *testing.T) { testNTAgainstNaive(t) }

// testNTDeterministic checks that NT gives bit-identical results for 1, 2
// and 3 workers and on repeated runs, and that Tile over any split gives
// NT's numbers.
func testNTDeterministic(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	r := rand.New(rand.NewPCG(15, 16))
	for _, sz := range [][3]int{{130, 67, 41}, {1, 300, 257}, {301, 1, 257}, {64, 64, 64}} {
		m, n, k := sz[0], sz[1], sz[2]
		a, b := randF(r, m*k), randF(r, n*k)
		var first []float32
		for _, procs := range []int{1, 2, 3, 2} {
			runtime.GOMAXPROCS(procs)
			got := make([]float32, m*n)
			NT(got, a, b, m, n, k)
			if first == nil {
				first = got
				continue
			}
			for i := range got {
				if math.Float32bits(got[i]) != math.Float32bits(first[i]) {
					t.Fatalf("%v with GOMAXPROCS %d: element %d is %v, first run gave %v", sz, procs, i, got[i], first[i])
				}
			}
		}
		// Tiles of odd sizes, written transposed (si = 1, sj = m).
		tiled := make([]float32, m*n)
		for i0 := 0; i0 < m; i0 += 5 {
			for j0 := 0; j0 < n; j0 += 7 {
				Tile(tiled, 1, m, a, b, k, i0, min(i0+5, m), j0, min(j0+7, n))
			}
		}
		for i := range m {
			for j := range n {
				if math.Float32bits(tiled[j*m+i]) != math.Float32bits(first[i*n+j]) {
					t.Fatalf("%v: tiled c[%d][%d] = %v, NT gave %v", sz, i, j, tiled[j*m+i], first[i*n+j])
				}
			}
		}
	}
}

func TestNTDeterministic(t *testing.T) { testNTDeterministic(t) }

// TestPlainGoKernels runs the kernel tests again with the plain-Go kernels
// when this build and CPU use the SIMD ones (else they already ran on
// plain Go).
func TestPlainGoKernels(t *testing.T) {
	if !SIMD() {
		t.Skip("the plain-Go kernels are the ones in use")
	}
	defer SetSIMD(SetSIMD(false))
	for _, tc := range []struct {
		name string
		f    func(*testing.T)
	}{
		{"DotKernels", testDotKernels},
		{"NTAgainstNaive", testNTAgainstNaive},
		{"NTDeterministic", testNTDeterministic},
	} {
		t.Run(tc.name, tc.f)
	}
}

func benchNT(b *testing.B, m, n, k int, f func(c, a, bb []float32, m, n, k int)) {
	r := rand.New(rand.NewPCG(1, 1))
	a, bb, c := randF(r, m*k), randF(r, n*k), make([]float32, m*n)
	for b.Loop() {
		f(c, a, bb, m, n, k)
	}
	b.ReportMetric(2*float64(m)*float64(n)*float64(k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}

// BenchmarkNT sweeps LLaMA projection shapes (m = out channels, n =
// tokens, k = in channels) for the blocked parallel kernel and the naive
// reference.
func BenchmarkNT(b *testing.B) {
	for _, s := range [][3]int{{2048, 1, 2048}, {8192, 1, 2048}, {2048, 64, 2048}, {8192, 64, 2048}, {256, 256, 256}} {
		b.Run(fmt.Sprintf("blocked_%dx%dx%d", s[0], s[1], s[2]), func(b *testing.B) { benchNT(b, s[0], s[1], s[2], NT) })
	}
	b.Run("naive_256x256x256", func(b *testing.B) { benchNT(b, 256, 256, 256, NTRef) })
}
