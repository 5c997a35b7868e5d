package quant

import (
	"fmt"
	"sync"
	"testing"
)

var (
	benchOnce sync.Once
	benchW    []uint16
)

// normal2048x8192 is the acceptance matrix: N(0,1) fp16, 2048×8192.
func normal2048x8192() []uint16 {
	benchOnce.Do(func() { benchW = NormalMatrix(2048, 8192, 1) })
	return benchW
}

// BenchmarkPalettize measures the acceptance matrix; the speed target is
// ≥ 50 million weights per second at 6 bits on 2 cores (see Mw/s).
func BenchmarkPalettize(b *testing.B) {
	w := normal2048x8192()
	shape := []int64{2048, 8192}
	for _, bits := range []int{4, 6} {
		b.Run(fmt.Sprintf("bits=%d", bits), func(b *testing.B) {
			b.SetBytes(int64(2 * len(w)))
			for b.Loop() {
				if _, err := Palettize(w, shape, Options{Bits: bits}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(w))*float64(b.N)/b.Elapsed().Seconds()/1e6, "Mw/s")
		})
	}
}

// BenchmarkPalettizeOneWorker is the per-core cost (Workers = 1); twice its
// Mw/s estimates two idle cores.
func BenchmarkPalettizeOneWorker(b *testing.B) {
	w := normal2048x8192()
	shape := []int64{2048, 8192}
	for _, bits := range []int{4, 6} {
		b.Run(fmt.Sprintf("bits=%d", bits), func(b *testing.B) {
			for b.Loop() {
				if _, err := Palettize(w, shape, Options{Bits: bits, Workers: 1}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(w))*float64(b.N)/b.Elapsed().Seconds()/1e6, "Mw/s")
		})
	}
}

// BenchmarkLloydBaseline is the naive baseline at 4 bits on the first 256
// rows of the same matrix (32 groups; it is about 30 times slower).
func BenchmarkLloydBaseline(b *testing.B) {
	w := normal2048x8192()[:256*8192]
	for b.Loop() {
		if _, err := LloydBaseline(w, []int64{256, 8192}, Options{Bits: 4}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(w))*float64(b.N)/b.Elapsed().Seconds()/1e6, "Mw/s")
}

// BenchmarkGroupSize palettizes the same 8 M N(0,1) fp16 weights cut into
// groups of 1 024 … 65 536 weights (8 rows each); ns/weight should be about
// flat, the per-group cost being proportional to the group's size.
func BenchmarkGroupSize(b *testing.B) {
	w := normal2048x8192()[:8<<20]
	for _, bits := range []int{4, 6} {
		for _, gw := range SweepGroupSizes {
			b.Run(fmt.Sprintf("bits=%d/group=%d", bits, gw), func(b *testing.B) {
				shape := []int64{int64(len(w) / (gw / 8)), int64(gw / 8)}
				for b.Loop() {
					if _, err := Palettize(w, shape, Options{Bits: bits}); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(b.Elapsed().Seconds()*1e9/float64(b.N)/float64(len(w)), "ns/weight")
			})
		}
	}
}
