package quant

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/anemll/anemll/internal/fp16"
)

var updateCalibDiag = flag.Bool("update-calib-diag", false, "rewrite testdata/calibdiag.txt from this run")

// synthDiagStats returns deterministic diagonal statistics for a rows×in
// weight: diag H spread over two decades (log-uniform, as activations with
// outlier channels give), a few dead channels when dead is set, and, when
// rowWeights is set, token-frequency-like row weights (some rows zero).
func synthDiagStats(rows, in int, seed uint64, dead, rowWeights bool) *Stats {
	rng := rand.New(rand.NewPCG(seed, 13))
	d := make([]float64, in)
	for j := range d {
		d[j] = math.Pow(10, 2*rng.Float64()-1) * float64(1+rng.IntN(64))
		if dead && j%97 == 5 {
			d[j] = 0
		}
	}
	st := &Stats{Diag: d}
	if rowWeights {
		st.RowWeight = make([]float64, rows)
		for r := range st.RowWeight {
			if rng.IntN(5) > 0 {
				st.RowWeight[r] = float64(rng.IntN(1000))
			}
		}
	}
	return st
}

// synthDiagWeights returns a rows×in fp16 weight: N(0, σ²) with σ varying
// by row, a few outliers, exact zeros and −0s.
func synthDiagWeights(rows, in int, seed uint64) []uint16 {
	rng := rand.New(rand.NewPCG(seed, 17))
	w := make([]uint16, rows*in)
	for r := range rows {
		sigma := 0.02 * (1 + float64(r%5))
		for j := range in {
			x := sigma * rng.NormFloat64()
			switch rng.IntN(500) {
			case 0:
				x *= 30
			case 1:
				x = 0
			case 2:
				x = math.Copysign(0, -1)
			}
			w[r*in+j] = uint16(fp16.FromFloat64(x))
		}
	}
	return w
}

// calibReportHash hashes a report's errors on H (float64 bits): per group
// and totals. (The output energy and the weight-space errors, report
// figures only, are summed differently since issue 11, so their last bits
// changed; checkReportTotals checks them.)
func calibReportHash(rep *CalibReport) string {
	h := sha256.New()
	var b [8]byte
	for _, l := range [][]float64{rep.Groups, rep.Groups0, {rep.Output0, rep.Output}} {
		for _, x := range l {
			binary.LittleEndian.PutUint64(b[:], math.Float64bits(x))
			h.Write(b[:])
		}
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

// checkReportTotals checks the report's weight-space errors against
// weightSSE of the uncalibrated and the calibrated palette, and its output
// energy against Σ_r rw_r Σ_j diag_j·w_rj².
func checkReportTotals(t *testing.T, key string, w []uint16, shape []int64, st *Stats, p *Palette, rep *CalibReport, opts Options) {
	t.Helper()
	opts.Indices = nil
	base, err := Palettize(w, shape, opts)
	if err != nil {
		t.Fatal(err)
	}
	var ref float64
	in := st.In()
	for r := range int(shape[0]) {
		var s float64
		for j, d := range st.Diag {
			x := h2f(w[r*in+j])
			s += d * x * x
		}
		ref += rowWeight(st, r) * s
	}
	for _, c := range []struct {
		name      string
		got, want float64
	}{{"Weight0", rep.Weight0, weightSSE(w, base)}, {"Weight", rep.Weight, weightSSE(w, p)}, {"OutputRef", rep.OutputRef, ref}} {
		if math.Abs(c.got-c.want) > 1e-9*c.want {
			t.Errorf("%s: report %s %g, weightSSE %g", key, c.name, c.got, c.want)
		}
	}
}

// TestGoldenCalibratedDiag pins the output of PalettizeCalibrated with
// diagonal statistics (the path every weight of a 1B model takes): the hash
// of palette and indices, and of the report's errors, on synthetic weights
// of 1B-like and small shapes at every bit width, with and without row
// weights, recorded before the speed work of issue 11
// (testdata/calibdiag.txt). A faster path must reproduce every byte.
// Re-record only for an intended change (-update-calib-diag) and say why.
func TestGoldenCalibratedDiag(t *testing.T) {
	type item struct {
		rows, in   int
		bits       int
		dead, rowW bool
	}
	items := []item{
		{64, 2048, 4, false, false},
		{64, 2048, 6, true, false},
		{32, 8192, 4, false, false},
		{32, 8192, 6, false, false},
		{16, 8192, 8, true, true},
		{48, 2048, 1, false, true},
		{48, 2048, 2, true, false},
		{48, 2048, 3, false, true},
		{24, 512, 4, true, true},
		{24, 512, 6, false, true},
		{16, 24, 6, false, false}, // few distinct values per group
		{16, 24, 8, false, true},
		{40, 96, 2, true, false},
	}
	got := map[string]string{}
	var keys []string
	add := func(key string, w []uint16, shape []int64, st *Stats, opts Options) {
		p, rep, err := PalettizeCalibrated(w, shape, st, opts)
		if err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		got[key] = paletteHash(p) + " " + calibReportHash(rep)
		keys = append(keys, key)
		checkReportTotals(t, key, w, shape, st, p, rep, opts)
	}
	for i, it := range items {
		w := synthDiagWeights(it.rows, it.in, uint64(i))
		st := synthDiagStats(it.rows, it.in, uint64(i), it.dead, it.rowW)
		key := fmt.Sprintf("%dx%d bits=%d dead=%v rowweights=%v", it.rows, it.in, it.bits, it.dead, it.rowW)
		add(key, w, []int64{int64(it.rows), int64(it.in)}, st, Options{Bits: it.bits, Workers: 1 + i%3})
	}
	if !testing.Short() {
		// The 1B layer-0 matrices with BenchmarkLayer1BCalibratedDiag's
		// statistics.
		for i, tn := range loadLayer1B(t) {
			st := synthDiagStats(int(tn.Shape[0]), int(tn.Shape[1]), uint64(i), false, false)
			for _, bits := range []int{4, 6} {
				add(fmt.Sprintf("1B %s bits=%d", tn.Name, bits), tn.Data, tn.Shape, st, Options{Bits: bits})
			}
		}
	}
	want := goldenFile(t, "testdata/calibdiag.txt", *updateCalibDiag, keys, got, 2)
	if want == nil {
		return
	}
	if !testing.Short() && len(want) != len(keys) {
		t.Errorf("%d recorded hashes, %d cases", len(want), len(keys))
	}
	for _, k := range keys {
		w, ok := want[k]
		switch {
		case !ok:
			t.Errorf("%s: no recorded hash", k)
		case w[:64] != got[k][:64]:
			t.Errorf("%s: palette hash %s, recorded %s", k, got[k][:16], w[:16])
		case w != got[k]:
			t.Errorf("%s: report hash %s, recorded %s", k, got[k][65:81], w[65:81])
		}
	}
}

// BenchmarkLayer1BCalibratedDiag palettizes the seven matrices of layer 0
// of the 1B shape with deterministic synthetic diagonal statistics (no row
// weights), as a calibrated 1B conversion does; compare BenchmarkLayer1B.
func BenchmarkLayer1BCalibratedDiag(b *testing.B) {
	tensors := loadLayer1B(b)
	n := 0
	stats := make([]*Stats, len(tensors))
	for i, t := range tensors {
		n += len(t.Data)
		stats[i] = synthDiagStats(int(t.Shape[0]), int(t.Shape[1]), uint64(i), false, false)
	}
	for _, bits := range []int{4, 6} {
		b.Run(fmt.Sprintf("bits=%d", bits), func(b *testing.B) {
			c0 := cpuTime()
			for b.Loop() {
				for i, t := range tensors {
					if _, _, err := PalettizeCalibrated(t.Data, t.Shape, stats[i], Options{Bits: bits}); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds()/1e6, "Mw/s")
			reportCPU(b, c0, n)
		})
	}
}

// TestDiagMatchesGroupSolver checks the diagonal path (diagSolver inside
// Palettize's loop) against groupSolver.solve, the general solver it
// replaces for diagonal statistics, group by group: the same palettes,
// indices and errors, bit for bit, on random shapes, group sizes, bit
// widths and statistics (dead channels, row weights with zeros, weights
// with few distinct values).
func TestDiagMatchesGroupSolver(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 3))
	for c := range 60 {
		bits := []int{1, 2, 3, 4, 6, 8}[c%6]
		gs := []int{1, 2, 4, 8, 16}[rng.IntN(5)]
		rows := gs * (1 + rng.IntN(6))
		in := 1 + rng.IntN(300)
		if c%5 == 0 {
			in = 1024 + rng.IntN(1024)
		}
		w := synthDiagWeights(rows, in, uint64(c))
		if c%7 == 3 { // few distinct values
			for i := range w {
				w[i] = uint16(fp16.FromFloat64(float64(rng.IntN(5)-2) * 0.25))
			}
		}
		st := synthDiagStats(rows, in, uint64(c), c%2 == 0, c%3 != 0)
		if c%11 == 4 { // an embedding: diag all ones
			for j := range st.Diag {
				st.Diag[j] = 1
			}
		}
		shape := []int64{int64(rows), int64(in)}
		opts := Options{Bits: bits, GroupSize: gs, Workers: 1 + c%3}
		p, rep, err := PalettizeCalibrated(w, shape, st, opts)
		if err != nil {
			t.Fatal(err)
		}
		base, err := Palettize(w, shape, opts)
		if err != nil {
			t.Fatal(err)
		}
		k, per := 1<<bits, gs*in
		g := newGroupSolver(st, nil, bits, gs, in)
		lut, idx := make([]uint16, k), make([]uint8, per)
		for i := range p.Groups() {
			res := g.solve(w[i*per:(i+1)*per], i*gs, base.LUT[i*k:(i+1)*k], base.Indices[i*per:(i+1)*per], lut, idx)
			if !slices.Equal(lut, p.LUT[i*k:(i+1)*k]) || !bytes.Equal(idx, p.Indices[i*per:(i+1)*per]) {
				t.Fatalf("case %d (%dx%d, %d bits, groups of %d), group %d: palette differs from groupSolver's", c, rows, in, bits, gs, i)
			}
			if res.err != rep.Groups[i] || res.err0 != rep.Groups0[i] {
				t.Fatalf("case %d group %d: errors %g, %g; groupSolver %g, %g", c, i, rep.Groups[i], rep.Groups0[i], res.err, res.err0)
			}
		}
	}
}
