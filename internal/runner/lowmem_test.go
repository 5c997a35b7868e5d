package runner

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const tinyRandom = "../../testdata/anemll-tiny-random"

// run prefills a two-batch prompt and decodes 6 greedy tokens, returning
// every logit and the final KV cache.
func runTiny(t *testing.T, m *Model) ([][]float32, map[string][]float32) {
	t.Helper()
	prompt := make([]int, 70)
	for i := range prompt {
		prompt[i] = (i*37 + 11) % 500
	}
	if err := m.Prefill(prompt[:69]); err != nil {
		t.Fatal(err)
	}
	var all [][]float32
	id := prompt[69]
	for pos := 69; pos < 75; pos++ {
		l, err := m.Decode(id, pos)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, l)
		id = Argmax(l)
	}
	snap := m.Snapshot()
	state := map[string][]float32{}
	for _, n := range snap.Names() {
		state[n] = snap.Tensor(n).F
	}
	return all, state
}

// Low-memory mode (one chunk loaded at a time, prefill chunk by chunk)
// gives the usual mode's logits and KV cache bit for bit, also after a
// Reset, on the two-chunk reference packages.
func TestLowMemoryMatches(t *testing.T) {
	d := filepath.Join(tinyRandom, "packages")
	for _, tc := range []struct {
		name  string
		files *Files
	}{
		{"combined", &Files{Dir: d, Embeddings: filepath.Join(d, "llama_embeddings.mlpackage"), LMHead: filepath.Join(d, "llama_lm_head_lut6.mlpackage"),
			Chunks: []ChunkFiles{{Combined: filepath.Join(d, "llama_FFN_PF_lut4_chunk_01of02.mlpackage")}, {Combined: filepath.Join(d, "llama_FFN_PF_lut4_chunk_02of02.mlpackage")}}}},
		{"separate", &Files{Dir: d, Embeddings: filepath.Join(d, "llama_embeddings.mlpackage"), LMHead: filepath.Join(d, "llama_lm_head_lut6.mlpackage"),
			Chunks: []ChunkFiles{
				{FFN: filepath.Join(d, "llama_FFN_lut4_chunk_01of02.mlpackage"), Prefill: filepath.Join(d, "llama_prefill_lut4_chunk_01of02.mlpackage")},
				{FFN: filepath.Join(d, "llama_FFN_lut4_chunk_02of02.mlpackage"), Prefill: filepath.Join(d, "llama_prefill_lut4_chunk_02of02.mlpackage")}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			full, err := LoadWith(tc.files, LoadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			low, err := LoadWith(tc.files, LoadOptions{LowMemory: true})
			if err != nil {
				t.Fatal(err)
			}
			if low.low == nil || low.infer != nil || low.prefill != nil {
				t.Fatal("low-memory model holds every chunk")
			}
			if low.ContextLength != full.ContextLength || low.BatchSize != full.BatchSize || low.Hidden != full.Hidden || low.StateLength != full.StateLength {
				t.Fatalf("sizes %d/%d/%d/%d, want %d/%d/%d/%d", low.ContextLength, low.BatchSize, low.Hidden, low.StateLength,
					full.ContextLength, full.BatchSize, full.Hidden, full.StateLength)
			}
			wantL, wantS := runTiny(t, full)
			for round := 0; round < 2; round++ {
				gotL, gotS := runTiny(t, low)
				for i := range wantL {
					for j := range wantL[i] {
						if gotL[i][j] != wantL[i][j] {
							t.Fatalf("round %d step %d logit %d: %v, want %v", round, i, j, gotL[i][j], wantL[i][j])
						}
					}
				}
				for n, w := range wantS {
					g := gotS[n]
					for j := range w {
						if g[j] != w[j] {
							t.Fatalf("round %d: state %s element %d: %v, want %v", round, n, j, g[j], w[j])
						}
					}
				}
				low.Reset()
			}
		})
	}
}

func TestNeedsLowMemory(t *testing.T) {
	d := filepath.Join(tinyRandom, "packages")
	f := &Files{Dir: d, Embeddings: filepath.Join(d, "llama_embeddings.mlpackage"), LMHead: filepath.Join(d, "llama_lm_head_lut6.mlpackage"),
		Chunks: []ChunkFiles{{Combined: filepath.Join(d, "llama_FFN_PF_lut4_chunk_01of02.mlpackage")}, {Combined: filepath.Join(d, "llama_FFN_PF_lut4_chunk_02of02.mlpackage")}}}
	est := EstimateBytes(f)
	var files int64
	for _, p := range []string{f.Embeddings, f.LMHead, f.Chunks[0].Combined, f.Chunks[1].Combined} {
		w, err := os.Stat(filepath.Join(p, "Data", "com.apple.CoreML", "weights", "weight.bin"))
		if err != nil {
			t.Fatal(err)
		}
		files += w.Size()
	}
	if est < files || est > 3*files { // weights plus programs and headroom
		t.Fatalf("estimate %d bytes for %d bytes of weight files", est, files)
	}
	for _, tc := range []struct {
		avail int64
		want  bool
	}{{0, false}, {est - 1, true}, {est, false}, {1 << 40, false}} {
		if got := needsLowMemory(f, tc.avail); got != tc.want {
			t.Errorf("available %d: %v, want %v", tc.avail, got, tc.want)
		}
	}
	one := *f
	one.Chunks = one.Chunks[:1]
	if needsLowMemory(&one, 1) {
		t.Error("low memory chosen for a single chunk")
	}
	mi := filepath.Join(t.TempDir(), "meminfo")
	os.WriteFile(mi, []byte("MemTotal:       24000000 kB\nMemFree:         1000 kB\nMemAvailable:   20971520 kB\n"), 0o644)
	if got := memAvailable(mi); got != 20971520<<10 {
		t.Errorf("memAvailable = %d", got)
	}
	if got := memAvailable(filepath.Join(t.TempDir(), "none")); got != 0 {
		t.Errorf("missing meminfo: %d", got)
	}
}

// TestCheckMemory: a model that does not fit even one chunk at a time is
// refused in one line; the budget is the embeddings, the LM head and the
// largest chunk; unknown memory is never refused. PeekContextLength reads
// the context without loading the packages.
func TestCheckMemory(t *testing.T) {
	d := filepath.Join(tinyRandom, "packages")
	f := &Files{Dir: d, Embeddings: filepath.Join(d, "llama_embeddings.mlpackage"), LMHead: filepath.Join(d, "llama_lm_head_lut6.mlpackage"),
		Chunks: []ChunkFiles{{Combined: filepath.Join(d, "llama_FFN_PF_lut4_chunk_01of02.mlpackage")}, {Combined: filepath.Join(d, "llama_FFN_PF_lut4_chunk_02of02.mlpackage")}}}
	budget := MinBytes(f, true)
	chunk := func(i int) int64 { return EstimateBytes(&Files{Chunks: f.Chunks[i : i+1]}) }
	if want := EstimateBytes(&Files{Embeddings: f.Embeddings, LMHead: f.LMHead}) + max(chunk(0), chunk(1)); budget != want || budget >= EstimateBytes(f) {
		t.Fatalf("low-memory budget %d, want %d (< all %d)", budget, want, EstimateBytes(f))
	}
	for _, tc := range []struct {
		avail int64
		ok    bool
	}{{0, true}, {budget, true}, {budget - 1, false}} {
		err := checkMemory(f, tc.avail)
		if (err == nil) != tc.ok {
			t.Fatalf("available %d: %v", tc.avail, err)
		}
		if err != nil {
			msg := err.Error()
			if strings.Contains(msg, "\n") || !strings.Contains(msg, d) || !strings.Contains(msg, "one chunk") || !strings.Contains(msg, "--chunk") {
				t.Errorf("message %q", msg)
			}
		}
	}
	m, err := LoadWith(f, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, files := range []*Files{f, {Chunks: []ChunkFiles{{FFN: filepath.Join(d, "llama_FFN_lut4_chunk_01of02.mlpackage")}}}} {
		if got, err := PeekContextLength(files); err != nil || got != m.ContextLength {
			t.Errorf("PeekContextLength = %d, %v; want %d", got, err, m.ContextLength)
		}
	}
}
