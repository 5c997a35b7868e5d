package runtime

import (
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	goruntime "runtime"
	"testing"

	"github.com/anemll/anemll/internal/gemm"
	"github.com/anemll/anemll/internal/gemm/gemmtest"
)

// TestDot checks the attention dot product against the float64 sum.
func TestDot(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for _, k := range []int{0, 1, 3, 4, 7, 8, 9, 100, 1001} {
		a, b := gemmtest.Guarded(r, k), gemmtest.Guarded(r, k)
		if want, tol := gemmtest.DotBound(a, b); math.Abs(float64(dot(a, b))-want) > tol {
			t.Errorf("k=%d dot = %v, want %v ± %g", k, dot(a, b), want, tol)
		}
	}
}

func testGemmNN(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	for _, sz := range [][3]int{{1, 1, 1}, {1, 8, 3}, {2, 9, 0}, {3, 7, 5}, {1, 31, 17}, {4, 32, 64}, {5, 33, 9}, {2, 40, 513}, {70, 64, 100}, {1, 100, 2}, {33, 1000, 7}} {
		m, n, k := sz[0], sz[1], sz[2]
		a, b := gemmtest.Guarded(r, m*k), gemmtest.Guarded(r, k*n)
		got := gemmtest.Guarded(r, m*n)
		for i := range got {
			got[i] = 12345 // must be overwritten
		}
		gemmNN(got, a, b, m, n, k)
		col := make([]float32, k)
		for i := 0; i < m; i++ {
			for j := 0; j < n; j++ {
				for p := range col {
					col[p] = b[p*n+j]
				}
				want, tol := gemmtest.DotBound(a[i*k:(i+1)*k], col)
				if g := float64(got[i*n+j]); math.Abs(g-want) > tol {
					t.Fatalf("%v: c[%d][%d] = %v, want %v ± %g", sz, i, j, g, want, tol)
				}
			}
		}
	}
}

func TestGemmNN(t *testing.T) { testGemmNN(t) }

// testGemmDeterministic checks that gemm.NT and gemmNN give bit-identical
// results for 1, 2 and 3 workers and on repeated runs.
func testGemmDeterministic(t *testing.T) {
	defer goruntime.GOMAXPROCS(goruntime.GOMAXPROCS(0))
	r := rand.New(rand.NewPCG(15, 16))
	for _, sz := range [][3]int{{130, 67, 41}, {1, 300, 257}, {301, 1, 257}, {64, 64, 64}} {
		m, n, k := sz[0], sz[1], sz[2]
		a, b := randF(r, m*k), randF(r, n*k)
		var first []float32
		for _, procs := range []int{1, 2, 3, 2} {
			goruntime.GOMAXPROCS(procs)
			nt, nn := make([]float32, m*n), make([]float32, m*n)
			gemm.NT(nt, a, b, m, n, k)
			gemmNN(nn, a, b, m, n, k)
			got := append(nt, nn...)
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
	}
}

func TestGemmDeterministic(t *testing.T) { testGemmDeterministic(t) }

// TestPlainGoKernels runs the kernel and op tests again with the plain-Go
// kernels when this build and CPU use the SIMD ones (else they already
// ran on plain Go).
func TestPlainGoKernels(t *testing.T) {
	if !useSIMD {
		t.Skip("the plain-Go kernels are the ones in use")
	}
	defer setSIMD(false)()
	for _, tc := range []struct {
		name string
		f    func(*testing.T)
	}{
		{"GemmNN", testGemmNN},
		{"GemmDeterministic", testGemmDeterministic},
		{"MatmulAgainstNaive", TestMatmulAgainstNaive},
		{"ConvAgainstNaive", TestConvAgainstNaive},
		{"LinearMatmul", TestLinearMatmul},
		{"SDPA", TestSDPA},
		{"LayerPrefillMatchesDecode", TestLayerPrefillMatchesDecode},
	} {
		t.Run(tc.name, tc.f)
	}
}

func BenchmarkGemmNN(b *testing.B) {
	for _, s := range [][3]int{{1, 64, 512}, {64, 64, 512}, {1, 2048, 2048}} {
		m, n, k := s[0], s[1], s[2]
		b.Run(fmt.Sprintf("%dx%dx%d", m, n, k), func(b *testing.B) { benchGemm(b, m, n, k, gemmNN) })
	}
}

// TestStridedCopyMerged checks stridedCopy and stridedScatter (which fuse
// contiguous axes and drop size-1 axes) against per-element index
// arithmetic on tile-, slice- and transpose-like layouts.
func TestStridedCopyMerged(t *testing.T) {
	src := make([]float32, 4096)
	for i := range src {
		src[i] = float32(i)
	}
	for _, tc := range []struct {
		shape, st []int
		off       int
	}{
		{[]int{2, 1, 4, 1, 1, 8, 1, 16}, []int{512, 0, 0, 128, 0, 16, 0, 1}, 0}, // tile (repeat axes)
		{[]int{1, 3, 5, 7}, []int{0, 35 * 2, 7 * 2, 1}, 3},                      // slice of a wider tensor
		{[]int{3, 4, 5}, []int{20, 5, 1}, 9},                                    // fully contiguous
		{[]int{5, 4, 3}, []int{1, 5, 20}, 0},                                    // transpose
		{[]int{1, 1, 1}, []int{7, 9, 11}, 17},                                   // one element
		{[]int{2, 0, 3}, []int{3, 3, 1}, 0},                                     // empty
	} {
		n := numel(tc.shape)
		want := make([]float32, n)
		idx := make([]int, len(tc.shape))
		for o := 0; o < n; o++ {
			s, rem := tc.off, o
			for a := len(tc.shape) - 1; a >= 0; a-- {
				idx[a] = rem % tc.shape[a]
				rem /= tc.shape[a]
				s += idx[a] * tc.st[a]
			}
			want[o] = src[s]
		}
		got := make([]float32, n)
		stridedCopy(got, src, tc.shape, tc.off, tc.st)
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("copy %v/%v: element %d = %v, want %v", tc.shape, tc.st, i, got[i], want[i])
			}
		}
		// Scatter back into a zero buffer: the same positions get the
		// values (later writes win for repeated positions, as in order).
		dst := make([]float32, len(src))
		ref := make([]float32, len(src))
		for o := 0; o < n; o++ {
			s, rem := tc.off, o
			for a := len(tc.shape) - 1; a >= 0; a-- {
				s += (rem % tc.shape[a]) * tc.st[a]
				rem /= tc.shape[a]
			}
			ref[s] = want[o] + 1
		}
		inc := make([]float32, n)
		for i := range inc {
			inc[i] = want[i] + 1
		}
		stridedScatter(dst, inc, tc.shape, tc.off, tc.st)
		for i := range ref {
			if dst[i] != ref[i] {
				t.Fatalf("scatter %v/%v: element %d = %v, want %v", tc.shape, tc.st, i, dst[i], ref[i])
			}
		}
	}
}

// ipow must equal repeated int32 multiplication (wrapping), checked here
// against modular exponentiation mod 2^32 with math/big, including
// exponents far too large for a linear loop.
func TestIpow(t *testing.T) {
	mod := new(big.Int).Lsh(big.NewInt(1), 32)
	for _, tc := range []struct{ a, b int32 }{
		{0, 0}, {0, 5}, {5, 0}, {2, 10}, {2, 31}, {2, 32}, {-2, 31}, {-3, 7},
		{3, 19}, {3, 21}, {7, 1 << 30}, {-5, math.MaxInt32}, {12345, 999999},
		{1, math.MaxInt32}, {-1, math.MaxInt32}, {math.MinInt32, 2},
	} {
		base := new(big.Int).SetUint64(uint64(uint32(tc.a)))
		want := int32(uint32(new(big.Int).Exp(base, big.NewInt(int64(tc.b)), mod).Uint64()))
		if got := ipow(tc.a, tc.b); got != want {
			t.Errorf("ipow(%d, %d) = %d, want %d", tc.a, tc.b, got, want)
		}
	}
	for _, tc := range []struct{ a, b, want int32 }{
		{1, -3, 1}, {-1, -3, -1}, {-1, -4, 1}, {2, -1, 0}, {0, -1, 0},
	} {
		if got := ipow(tc.a, tc.b); got != tc.want {
			t.Errorf("ipow(%d, %d) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestBroadcastShape(t *testing.T) {
	for _, tc := range []struct {
		in   [][]int
		want []int // nil: must fail
	}{
		{[][]int{{2, 1, 4}, {3, 1}, {1}}, []int{2, 3, 4}},
		{[][]int{{1, 4}, {5, 1}, {5, 4}}, []int{5, 4}},
		{[][]int{{0, 3}, {1, 3}}, []int{0, 3}},
		{[][]int{{}, {2}}, []int{2}},
		{[][]int{{2, 3}, {1, 3}, {4, 1, 1}}, []int{4, 2, 3}},
		{[][]int{{2, 3}, {3, 2}}, nil},
		{[][]int{{1, 3}, {2, 1}, {2, 4}}, nil},
	} {
		got, err := broadcastShape(tc.in...)
		if tc.want == nil {
			if err == nil {
				t.Errorf("%v: broadcast to %v, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || !equalInts(got, tc.want) {
			t.Errorf("%v: got %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}
