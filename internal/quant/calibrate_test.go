package quant

import (
	"bytes"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/anemll/anemll/internal/fp16"
)

// synthCalib returns a rows×in fp16 weight of N(0, 0.05²) entries and the
// statistics of tokens correlated inputs: x = z·A with z ~ N(0,1) and A a
// random mixing matrix whose columns have scales spread over two decades
// (as real activations have outlier channels).
func synthCalib(rows, in, tokens int, seed uint64) ([]uint16, *Stats) {
	rng := rand.New(rand.NewPCG(seed, 7))
	w := make([]uint16, rows*in)
	for i := range w {
		w[i] = uint16(fp16.FromFloat64(0.05 * rng.NormFloat64()))
	}
	a := make([]float64, in*in)
	for j := range in {
		scale := math.Pow(10, 2*rng.Float64()-1)
		for i := range in {
			a[i*in+j] = scale * rng.NormFloat64() / math.Sqrt(float64(in))
		}
		a[j*in+j] += scale
	}
	h := make([]float64, in*in)
	x := make([]float64, in)
	z := make([]float64, in)
	for range tokens {
		for i := range z {
			z[i] = rng.NormFloat64()
		}
		for j := range in {
			var s float64
			for i := range in {
				s += z[i] * a[i*in+j]
			}
			x[j] = s
		}
		for i := range in {
			for j := range in {
				h[i*in+j] += x[i] * x[j]
			}
		}
	}
	d := make([]float64, in)
	for i := range in {
		d[i] = h[i*in+i]
	}
	return w, &Stats{Diag: d, Gram: h}
}

func TestPalettizeCalibratedBeatsUncalibrated(t *testing.T) {
	tests := []struct {
		name     string
		bits     int
		diagOnly bool
		maxRatio float64 // calibrated / uncalibrated output error, whole tensor
	}{
		{"2-bit full H", 2, false, 0.6},
		{"3-bit full H", 3, false, 0.5},
		{"4-bit full H", 4, false, 0.4},
		{"6-bit full H", 6, false, 0.25},
		{"4-bit diag H", 4, true, 0.7},
		{"4-bit full H, lite schedule", 4, false, 0.4},
		{"2-bit full H, lite schedule", 2, false, 0.6},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rows := 32
			if strings.HasSuffix(tc.name, "lite schedule") {
				rows = 8200 // 8200·64² > MaxFullGramWork
			}
			if liteSchedule(rows, 64) != (rows > 32) {
				t.Fatalf("liteSchedule(%d, 64) = %v", rows, liteSchedule(rows, 64))
			}
			w, st := synthCalib(rows, 64, 400, 1)
			if tc.diagOnly {
				st = &Stats{Diag: st.Diag}
			}
			shape := []int64{int64(rows), 64}
			p, rep, err := PalettizeCalibrated(w, shape, st, Options{Bits: tc.bits, Workers: 2})
			if err != nil {
				t.Fatal(err)
			}
			base, err := Palettize(w, shape, Options{Bits: tc.bits})
			if err != nil {
				t.Fatal(err)
			}
			if got := OutputError(w, base, st); math.Abs(got-rep.Output0) > 1e-9*rep.OutputRef {
				t.Errorf("report Output0 %g, OutputError of Palettize %g", rep.Output0, got)
			}
			if got := OutputError(w, p, st); math.Abs(got-rep.Output) > 1e-9*rep.OutputRef {
				t.Errorf("report Output %g, OutputError of result %g", rep.Output, got)
			}
			for g := range rep.Groups {
				if rep.Groups[g] > rep.Groups0[g] {
					t.Errorf("group %d: calibrated error %g above uncalibrated %g", g, rep.Groups[g], rep.Groups0[g])
				}
			}
			ratio := rep.Output / rep.Output0
			t.Logf("%s: output error / ref %.3g → %.3g (ratio %.3f); weight SSE %.3g → %.3g",
				tc.name, rep.Output0/rep.OutputRef, rep.Output/rep.OutputRef, ratio, rep.Weight0, rep.Weight)
			if ratio > tc.maxRatio {
				t.Errorf("calibrated / uncalibrated output error %.3f, want ≤ %.2f", ratio, tc.maxRatio)
			}
			if rep.Weight < rep.Weight0 {
				t.Errorf("weight SSE fell (%g < %g): the uncalibrated palette minimises it, so this is a bug", rep.Weight, rep.Weight0)
			}
			checkCalibPalette(t, p, tc.bits)
		})
	}
}

// checkCalibPalette checks the format invariants Palettize guarantees.
func checkCalibPalette(t *testing.T, p *Palette, bits int) {
	t.Helper()
	k := 1 << bits
	for g := range p.Groups() {
		lut := p.LUT[g*k : (g+1)*k]
		for i := 1; i < k; i++ {
			if h2f(lut[i]) < h2f(lut[i-1]) {
				t.Fatalf("group %d LUT not ascending: %v", g, lut)
			}
		}
		for _, h := range lut {
			if h == 0x8000 || h&0x7c00 == 0x7c00 {
				t.Fatalf("group %d LUT has −0 or a non-finite entry %#04x", g, h)
			}
		}
	}
	for i, x := range p.Indices {
		if int(x) >= k {
			t.Fatalf("index %d = %d out of range", i, x)
		}
	}
}

func TestPalettizeCalibratedWorkersAndReruns(t *testing.T) {
	// The lite schedule too (its own error form).
	wl, stl := synthCalib(16400, 48, 200, 4) // 16400·48² > MaxFullGramWork
	if !liteSchedule(16400, 48) {
		t.Fatal("16400×48 should take the lite schedule")
	}
	var lite *Palette
	for _, workers := range []int{1, 3} {
		p, _, err := PalettizeCalibrated(wl, []int64{16400, 48}, &Stats{Diag: stl.Diag, Gram: stl.Gram}, Options{Bits: 4, Workers: workers})
		if err != nil {
			t.Fatal(err)
		}
		if lite != nil && (!bytes.Equal(p.Indices, lite.Indices) || !slices.Equal(p.LUT, lite.LUT)) {
			t.Fatalf("lite schedule, workers %d: result differs from workers 1", workers)
		}
		lite = p
	}
	w, st := synthCalib(64, 48, 200, 3)
	shape := []int64{64, 48, 1, 1}
	var first *Palette
	for _, workers := range []int{1, 4, 1, 3} {
		// Fresh Stats each time: the cached factor must not matter either.
		s := &Stats{Diag: st.Diag, Gram: st.Gram}
		p, _, err := PalettizeCalibrated(w, shape, s, Options{Bits: 4, Workers: workers})
		if err != nil {
			t.Fatal(err)
		}
		if first == nil {
			first = p
			continue
		}
		if !bytes.Equal(p.Indices, first.Indices) || !slices.Equal(p.LUT, first.LUT) {
			t.Fatalf("workers %d: result differs from workers 1", workers)
		}
	}
	// Lent index storage (which the uncalibrated first pass uses) changes
	// nothing either.
	lent := bytes.Repeat([]byte{0xee}, len(w))
	p, _, err := PalettizeCalibrated(w, shape, &Stats{Diag: st.Diag, Gram: st.Gram}, Options{Bits: 4, Indices: lent})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p.Indices, first.Indices) || !slices.Equal(p.LUT, first.LUT) {
		t.Fatal("lent index storage changes the calibrated palette")
	}
}

func TestPalettizeCalibratedRowWeights(t *testing.T) {
	// An embedding-like table: Diag all ones, rows weighted by frequency.
	// Rows with a large weight must come out better than without weights.
	rows, in := 16, 16
	rng := rand.New(rand.NewPCG(5, 5))
	w := make([]uint16, rows*in)
	for i := range w {
		w[i] = uint16(fp16.FromFloat64(rng.NormFloat64()))
	}
	ones := make([]float64, in)
	for i := range ones {
		ones[i] = 1
	}
	rw := make([]float64, rows)
	for r := range rw {
		rw[r] = 1
		if r%8 == 0 {
			rw[r] = 1000 // one frequent token per group
		}
	}
	st := &Stats{Diag: ones, RowWeight: rw}
	p, rep, err := PalettizeCalibrated(w, []int64{int64(rows), int64(in)}, st, Options{Bits: 2})
	if err != nil {
		t.Fatal(err)
	}
	base, _ := Palettize(w, []int64{int64(rows), int64(in)}, Options{Bits: 2})
	rowErr := func(p *Palette, r int) float64 {
		d := p.Dense()
		var s float64
		for j := range in {
			e := h2f(w[r*in+j]) - h2f(d[r*in+j])
			s += e * e
		}
		return s
	}
	for r := 0; r < rows; r += 8 {
		t.Logf("frequent row %d: error %.4g, uncalibrated %.4g", r, rowErr(p, r), rowErr(base, r))
		if a, b := rowErr(p, r), rowErr(base, r); a > 0.7*b {
			t.Errorf("frequent row %d: error %g, uncalibrated %g; want ≤ 0.7×", r, a, b)
		}
	}
	if rep.Output > rep.Output0 {
		t.Errorf("weighted error rose: %g > %g", rep.Output, rep.Output0)
	}
	t.Logf("row-weighted error %g → %g", rep.Output0, rep.Output)
}

func TestPalettizeCalibratedBadStats(t *testing.T) {
	w, st := synthCalib(8, 32, 10, 1)
	cases := []struct {
		name string
		st   *Stats
	}{
		{"wrong in", &Stats{Diag: st.Diag[:16]}},
		{"wrong gram", &Stats{Diag: st.Diag, Gram: st.Gram[:10]}},
		{"wrong row weights", &Stats{Diag: st.Diag, RowWeight: make([]float64, 3)}},
	}
	for _, c := range cases {
		if _, _, err := PalettizeCalibrated(w, []int64{8, 32}, c.st, Options{Bits: 4}); err == nil {
			t.Errorf("%s: no error", c.name)
		}
	}
}

func TestKMeans1DExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	for trial := range 50 {
		n := 5 + trial%8
		k := 2 + trial%3
		pts := make([]wpoint, n)
		x := 0.0
		for i := range pts {
			x += 0.1 + rng.Float64()
			pts[i] = wpoint{x, 0.01 + rng.Float64()*float64(1+trial%4)}
		}
		g := &groupSolver{}
		cuts := g.kmeans1D(pts, k)
		got := clusterCost(pts, cuts)
		// Brute force over all k−1 cut subsets.
		best := math.Inf(1)
		var rec func(c []int, from int)
		rec = func(c []int, from int) {
			if len(c) == k {
				best = math.Min(best, clusterCost(pts, append(c, n)))
				return
			}
			for i := from; i < n; i++ {
				rec(append(c, i), i+1)
			}
		}
		rec([]int{0}, 1)
		if got > best*(1+1e-12)+1e-15 {
			t.Fatalf("trial %d (n %d, k %d): cost %g, optimum %g (cuts %v)", trial, n, k, got, best, cuts)
		}
		if fast := clusterCost(pts, g.exactCuts(pts, k)); fast > best*(1+1e-12)+1e-15 {
			t.Fatalf("trial %d (n %d, k %d): exactCuts cost %g, optimum %g", trial, n, k, fast, best)
		}
	}
}

// TestExactCutsMatchesProgramme checks the fast weighted solver against the
// layered programme on bigger groups (4 and 6 bits, weights spread over
// four decades), where brute force is out of reach.
func TestExactCutsMatchesProgramme(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for trial := range 12 {
		n := 200 + 300*trial
		k := []int{16, 64}[trial%2]
		pts := make([]wpoint, n)
		x := 0.0
		for i := range pts {
			x += 0.01 + rng.ExpFloat64()
			pts[i] = wpoint{x, math.Pow(10, 4*rng.Float64())}
		}
		g := &groupSolver{}
		want := clusterCost(pts, g.kmeans1D(pts, k))
		got := clusterCost(pts, g.exactCuts(pts, k))
		if math.Abs(got-want) > 1e-9*want {
			t.Errorf("trial %d (n %d, k %d): exactCuts cost %.12g, programme %.12g", trial, n, k, got, want)
		}
	}
}

func clusterCost(pts []wpoint, cuts []int) float64 {
	var tot float64
	for c := 0; c+1 < len(cuts); c++ {
		var s0, s1 float64
		for _, p := range pts[cuts[c]:cuts[c+1]] {
			s0 += p.c
			s1 += p.c * p.x
		}
		mu := s1 / s0
		for _, p := range pts[cuts[c]:cuts[c+1]] {
			tot += p.c * (p.x - mu) * (p.x - mu)
		}
	}
	return tot
}

func TestFeedbackFactor(t *testing.T) {
	_, st := synthCalib(8, 12, 50, 2)
	fb := st.factor()
	if fb == nil {
		t.Fatal("no factor")
	}
	n := fb.n
	// UᵀU must be (H_perm + λI)⁻¹: check (UᵀU)(H_perm + λI) = I.
	var mean float64
	for _, d := range st.Diag {
		mean += d
	}
	mean /= float64(n)
	hp := make([]float64, n*n)
	for i := range n {
		for j := range n {
			hp[i*n+j] = st.Gram[fb.perm[i]*n+fb.perm[j]]
		}
		hp[i*n+i] += dampFraction * mean
	}
	for i := range n {
		for j := range n {
			var s float64
			for m := range n {
				var inv float64
				for l := range n {
					inv += fb.u[l*n+i] * fb.u[l*n+m]
				}
				s += inv * hp[m*n+j]
			}
			want := 0.0
			if i == j {
				want = 1
			}
			if math.Abs(s-want) > 1e-9 {
				t.Fatalf("(UᵀU)(H+λI)[%d][%d] = %g, want %g", i, j, s, want)
			}
		}
	}
	for i := 1; i < n; i++ {
		if st.Diag[fb.perm[i]] > st.Diag[fb.perm[i-1]] {
			t.Fatalf("permutation not by descending diag")
		}
	}
}

// BenchmarkPalettizeCalibrated measures a 64×2048 slice of a 1B-shaped
// projection with a full 2048² H at 4 bits (8 groups); a 2048×2048 matrix
// is 32 times this.
func BenchmarkPalettizeCalibrated(b *testing.B) {
	w, st := synthCalib(64, 2048, 64, 11)
	st.factor()
	b.ResetTimer()
	for range b.N {
		if _, _, err := PalettizeCalibrated(w, []int64{64, 2048}, st, Options{Bits: 4}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPalettizeCalibratedDiag is BenchmarkPalettizeCalibrated with
// the diagonal of H only, the statistics wide inputs get.
func BenchmarkPalettizeCalibratedDiag(b *testing.B) {
	w, st := synthCalib(64, 2048, 64, 11)
	st.Gram = nil
	b.SetBytes(int64(len(w)))
	b.ResetTimer()
	for range b.N {
		if _, _, err := PalettizeCalibrated(w, []int64{64, 2048}, st, Options{Bits: 4}); err != nil {
			b.Fatal(err)
		}
	}
}

func TestStatsAffordable(t *testing.T) {
	full := func(in int) *Stats {
		return &Stats{Diag: make([]float64, in), Gram: make([]float64, in*in), RowWeight: []float64{1}}
	}
	tests := []struct {
		name     string
		st       *Stats
		rows     int
		wantFull bool
	}{
		{"tiny down_proj 128×384", full(384), 128, true},
		{"full schedule's bound 128×512", full(512), 128, true},
		{"lite schedule 129×512", full(512), 129, true},
		{"lite schedule's bound 2048×512 (mid-size gate_proj)", full(512), 2048, true},
		{"just over the bound", full(512), 2049, false},
		{"mid-size down_proj 512×2048", full(2048), 512, false},
		{"full schedule, narrow and wide: 8×2048", full(2048), 8, true},
		{"under the lite work bound but too wide: Gemma-3-1B k_proj 256×1152", full(1152), 256, false},
		{"1B gate_proj 8192×2048", full(2048), 8192, false},
		{"diagonal only", &Stats{Diag: make([]float64, 64)}, 8, false},
	}
	for _, tc := range tests {
		got := tc.st.Affordable(tc.rows)
		if (got.Gram != nil) != tc.wantFull {
			t.Errorf("%s: full Gram kept %v, want %v", tc.name, got.Gram != nil, tc.wantFull)
		}
		if len(got.Diag) != len(tc.st.Diag) || len(got.RowWeight) != len(tc.st.RowWeight) {
			t.Errorf("%s: diagonal or row weights lost", tc.name)
		}
	}
}
