package quant

import (
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"
)

// cpuTime is the process's user + system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU adds the CPU time per weight since start (all threads: on a
// shared machine a steadier measure than wall time) as "cpu-ns/weight".
func reportCPU(b *testing.B, start time.Duration, weights int) {
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N)/float64(weights), "cpu-ns/weight")
}

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

// BenchmarkTiny palettizes every eligible tensor of the bundled model (30
// matrices, 1 M weights, groups of 8 rows × 128–384 columns); the target
// is ≥ 100 M weights/s at 4 bits and ≥ 80 M at 6 bits on 2 cores. Run with
// -cpu 1 for the one-core cost.
func BenchmarkTiny(b *testing.B) {
	var tensors []Tensor
	n := 0
	for _, t := range loadTiny(b) {
		if Eligible(t.Shape, 0) {
			tensors = append(tensors, t)
			n += len(t.Data)
		}
	}
	for _, bits := range []int{4, 6} {
		b.Run(fmt.Sprintf("bits=%d", bits), func(b *testing.B) {
			c0 := cpuTime()
			for b.Loop() {
				for _, t := range tensors {
					if _, err := Palettize(t.Data, t.Shape, Options{Bits: bits}); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds()/1e6, "Mw/s")
			reportCPU(b, c0, n)
		})
	}
}

// BenchmarkLayer1B palettizes the seven matrices of layer 0 of the 1B shape.
func BenchmarkLayer1B(b *testing.B) {
	tensors := loadLayer1B(b)
	n := 0
	for _, t := range tensors {
		n += len(t.Data)
	}
	for _, bits := range []int{4, 6} {
		b.Run(fmt.Sprintf("bits=%d", bits), func(b *testing.B) {
			c0 := cpuTime()
			for b.Loop() {
				for _, t := range tensors {
					if _, err := Palettize(t.Data, t.Shape, Options{Bits: bits}); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds()/1e6, "Mw/s")
			reportCPU(b, c0, n)
		})
	}
}
