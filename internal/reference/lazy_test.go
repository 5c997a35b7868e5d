package reference_test

import (
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/anemll/anemll/internal/hf"
	"github.com/anemll/anemll/internal/hf/synth"
	"github.com/anemll/anemll/internal/reference"
)

// lazyShape is a model big enough for one layer to be a small part of it:
// 8 layers of 0.85 M parameters, 1 M-parameter embeddings and head (untied).
var lazyShape = synth.Options{Hidden: 256, Intermediate: 768, Layers: 8, Heads: 8, KVHeads: 8, Vocab: 4096,
	DType: hf.BF16, Std: 0.05, Seed: 3}

const lazyWeightBytes = 4 * (8*(4*256*256+3*256*768) + 2*4096*256 + 17*256) // float32 bytes

// peakHeap runs f with the model observed and returns the largest live heap
// above base (HeapAlloc right after a collection) seen when each layer's
// attention and MLP first run, at the LM head, and after f.
func peakHeap(t *testing.T, m *reference.Model, base uint64, f func()) uint64 {
	t.Helper()
	var peak uint64
	var ms runtime.MemStats
	sample := func() {
		runtime.GC()
		runtime.ReadMemStats(&ms)
		peak = max(peak, ms.HeapAlloc-min(base, ms.HeapAlloc))
	}
	seen := map[string]bool{}
	m.Observe(func(name string, _ []float32) {
		if seen[name] {
			return
		}
		seen[name] = true
		if strings.HasSuffix(name, "q_proj.weight") || strings.HasSuffix(name, "down_proj.weight") || name == "lm_head.weight" {
			sample()
		}
	})
	f()
	sample()
	m.Observe(nil)
	return peak
}

// TestLazyMemory: a lazy model keeps no weights between calls and holds
// about one layer (plus the activations and one block of LM-head rows)
// while it runs; an eager one holds them all. Live heap is measured after
// a collection, so the numbers do not depend on GC timing. The logits are
// the eager ones bit for bit, on Forward and on Step.
func TestLazyMemory(t *testing.T) {
	dir := t.TempDir()
	if err := synth.Write(dir, lazyShape); err != nil {
		t.Fatal(err)
	}
	cfg, err := hf.LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := hf.OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	ids := []int{5, 900, 17, 4000, 33, 2048, 1, 77, 3000, 12, 640, 9}
	var ms runtime.MemStats
	results := map[bool][][]float32{}
	for _, lazy := range []bool{false, true} {
		runtime.GC()
		runtime.ReadMemStats(&ms)
		base := ms.HeapAlloc
		m, err := reference.NewWithOptions(cfg, reference.CheckpointWeights(ck), reference.Options{Lazy: lazy})
		if err != nil {
			t.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&ms)
		held := ms.HeapAlloc - min(base, ms.HeapAlloc)
		var out [][]float32
		peak := peakHeap(t, m, base, func() {
			if out, err = m.Forward(ids); err != nil {
				t.Fatal(err)
			}
		})
		results[lazy] = out
		t.Logf("lazy=%v: model holds %.2f MB, peak live heap in Forward %.2f MB (float32 weights %.2f MB)",
			lazy, float64(held)/1e6, float64(peak)/1e6, float64(lazyWeightBytes)/1e6)
		if lazy {
			// One layer is 3.4 MB, the head block 4.2 MB, activations < 1 MB.
			if held > lazyWeightBytes/20 || peak > lazyWeightBytes/3 {
				t.Errorf("lazy model holds %d bytes, peaks at %d: not bounded (weights %d)", held, peak, lazyWeightBytes)
			}
		} else if held < lazyWeightBytes {
			t.Errorf("eager model holds only %d bytes of %d", held, lazyWeightBytes)
		}
		s := m.NewSession()
		for p, id := range ids {
			row, err := s.Step(id)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(row, results[false][p]) {
				t.Fatalf("lazy=%v: Step at %d differs from eager Forward", lazy, p)
			}
		}
		runtime.KeepAlive(m)
	}
	for p := range ids {
		if !slices.Equal(results[true][p], results[false][p]) {
			t.Fatalf("lazy Forward differs from eager at position %d", p)
		}
	}
}

// BenchmarkForwardMemory reports the peak resident set (VmHWM, reset
// through /proc/self/clear_refs before each run, after returning free heap
// to the OS) of building the model
// and running a 32-token Forward, eager and lazy, on an 8-layer BF16
// checkpoint. Linux only. Run alone: -run '^$' -bench ForwardMemory.
func BenchmarkForwardMemory(b *testing.B) {
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		b.Skipf("cannot reset the peak RSS: %v", err)
	}
	dir := b.TempDir()
	o := lazyShape
	o.Layers, o.Hidden, o.Intermediate, o.Heads, o.KVHeads = 16, 512, 1536, 8, 8
	if err := synth.Write(dir, o); err != nil {
		b.Fatal(err)
	}
	cfg, err := hf.LoadConfig(dir)
	if err != nil {
		b.Fatal(err)
	}
	ids := make([]int, 32)
	for i := range ids {
		ids[i] = (i * 97) % o.Vocab
	}
	for _, lazy := range []bool{false, true} {
		b.Run(map[bool]string{false: "eager", true: "lazy"}[lazy], func(b *testing.B) {
			for b.Loop() {
				debug.FreeOSMemory() // return earlier runs' heap before the reset
				if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
					b.Fatal(err)
				}
				ck, err := hf.OpenCheckpoint(dir)
				if err != nil {
					b.Fatal(err)
				}
				m, err := reference.NewWithOptions(cfg, reference.CheckpointWeights(ck), reference.Options{Lazy: lazy})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := m.Forward(ids); err != nil {
					b.Fatal(err)
				}
				ck.Close()
				b.ReportMetric(vmHWM(b)/1e6, "peak-RSS-MB")
			}
		})
	}
}

// vmHWM returns the process's peak resident set in bytes.
func vmHWM(b testing.TB) float64 {
	s, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(s), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb * 1024
		}
	}
	b.Fatal("no VmHWM")
	return 0
}
