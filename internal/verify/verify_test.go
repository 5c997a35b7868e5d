package verify

import (
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/anemll/anemll/internal/hf"
	"github.com/anemll/anemll/internal/reference"
	"github.com/anemll/anemll/internal/runner"
)

const refDir = "../../testdata/anemll-tiny-random"

func tinyRandomReference(t *testing.T) (*hf.Config, *hf.Checkpoint) {
	t.Helper()
	dir := filepath.Join(refDir, "checkpoint")
	cfg, err := hf.LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := hf.OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ck.Close() })
	return cfg, ck
}

// TestAppleMadePackages runs the packages Apple's coremltools produced
// (separate and combined, fp16 and LUT) through our runtime and compares
// them with our reference forward pass of their checkpoint: proof that the
// interpreter agrees with packages we did not write.
func TestAppleMadePackages(t *testing.T) {
	cfg, ck := tinyRandomReference(t)
	rng := rand.New(rand.NewPCG(1, 2))
	ids := make([]int, 200)
	for i := range ids {
		ids[i] = rng.IntN(cfg.VocabSize)
	}
	tests := []struct {
		name            string
		files           runner.Files
		packageWeights  bool
		maxMeanKL, top1 float64
	}{
		{"fp16 separate", runner.Files{
			Embeddings: "packages-fp16/llama_embeddings.mlpackage", LMHead: "packages-fp16/llama_lm_head.mlpackage",
			Chunks: []runner.ChunkFiles{
				{FFN: "packages-fp16/llama_FFN_chunk_01of02.mlpackage", Prefill: "packages-fp16/llama_prefill_chunk_01of02.mlpackage"},
				{FFN: "packages-fp16/llama_FFN_chunk_02of02.mlpackage", Prefill: "packages-fp16/llama_prefill_chunk_02of02.mlpackage"},
			}}, false, 1e-4, 0.985},
		{"fp16 combined", runner.Files{
			Embeddings: "packages-fp16/llama_embeddings.mlpackage", LMHead: "packages-fp16/llama_lm_head.mlpackage",
			Chunks: []runner.ChunkFiles{{Combined: "packages-fp16/llama_FFN_PF_chunk_01of02.mlpackage"}, {Combined: "packages-fp16/llama_FFN_PF_chunk_02of02.mlpackage"}}},
			false, 1e-4, 0.985},
		{"lut combined, package weights", runner.Files{
			Embeddings: "packages/llama_embeddings.mlpackage", LMHead: "packages/llama_lm_head_lut6.mlpackage",
			Chunks: []runner.ChunkFiles{{Combined: "packages/llama_FFN_PF_lut4_chunk_01of02.mlpackage"}, {Combined: "packages/llama_FFN_PF_lut4_chunk_02of02.mlpackage"}}},
			true, 1e-4, 0.985},
		{"lut separate, package weights", runner.Files{
			Embeddings: "packages/llama_embeddings.mlpackage", LMHead: "packages/llama_lm_head_lut6.mlpackage",
			Chunks: []runner.ChunkFiles{
				{FFN: "packages/llama_FFN_lut4_chunk_01of02.mlpackage", Prefill: "packages/llama_prefill_lut4_chunk_01of02.mlpackage"},
				{FFN: "packages/llama_FFN_lut4_chunk_02of02.mlpackage", Prefill: "packages/llama_prefill_lut4_chunk_02of02.mlpackage"},
			}}, true, 1e-4, 0.985},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.files
			f.Embeddings = filepath.Join(refDir, f.Embeddings)
			f.LMHead = filepath.Join(refDir, f.LMHead)
			for i := range f.Chunks {
				for _, p := range []*string{&f.Chunks[i].Combined, &f.Chunks[i].FFN, &f.Chunks[i].Prefill} {
					if *p != "" {
						*p = filepath.Join(refDir, *p)
					}
				}
			}
			m, err := runner.Load(&f)
			if err != nil {
				t.Fatal(err)
			}
			var w reference.Weights = reference.CheckpointWeights(ck)
			if tc.packageWeights {
				if w, err = PackageWeights(&f, w, cfg); err != nil {
					t.Fatal(err)
				}
				if !w.(*packageWeights).hasLMHead() {
					t.Fatal("LM head weights were not read from the package")
				}
			}
			ref, err := reference.New(cfg, w)
			if err != nil {
				t.Fatal(err)
			}
			rep, err := Compare(m, ref, ids)
			if err != nil {
				t.Fatal(err)
			}
			var sb strings.Builder
			rep.Write(&sb)
			t.Logf("\n%s", sb.String())
			if err := rep.Check(Thresholds{MaxMeanKL: tc.maxMeanKL, MinTop1: tc.top1}); err != nil {
				t.Error(err)
			}
			if rep.Decode.Positions != len(ids) || rep.Prefill.Positions != len(ids) {
				t.Errorf("positions %d/%d, want %d", rep.Decode.Positions, rep.Prefill.Positions, len(ids))
			}
		})
	}
}

// A top-1 miss counts as agreement in Check only when the reference
// scores the packages' choice within TieGap of its best; Top1 itself
// counts exact matches only.
func TestTop1Ties(t *testing.T) {
	for _, tc := range []struct {
		name      string
		want, got [][]float32
		top1      float64
		misses    []int
		ties      []int
		pass      bool
	}{
		{"agree", [][]float32{{0, 2, 1}, {3, 0, 0}}, [][]float32{{0, 2, 1}, {3, 1, 0}}, 1, nil, nil, true},
		{"tie", [][]float32{{0, 2, 2 - TieGap/2}, {3, 0, 0}}, [][]float32{{0, 2, 2.01}, {3, 1, 0}}, 0.5, []int{0}, []int{0}, true},
		{"gap at the limit", [][]float32{{0, 2, 2 - TieGap}, {3, 0, 0}}, [][]float32{{0, 2, 2.01}, {3, 1, 0}}, 0.5, []int{0}, nil, false},
		{"clear miss", [][]float32{{0, 2, 1}, {3, 0, 0}}, [][]float32{{0, 2, 1}, {0, 3, 0}}, 0.5, []int{1}, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAccumulator()
			for i := range tc.want {
				if err := a.add(i, tc.want[i], tc.got[i]); err != nil {
					t.Fatal(err)
				}
			}
			s := a.stats()
			if s.Top1 != tc.top1 || !slices.Equal(s.Misses, tc.misses) || !slices.Equal(s.Ties, tc.ties) {
				t.Fatalf("top-1 %v misses %v ties %v, want %v %v %v", s.Top1, s.Misses, s.Ties, tc.top1, tc.misses, tc.ties)
			}
			rep := &Report{Decode: s, Prefill: s}
			err := rep.Check(Thresholds{MaxMeanKL: 1, MinTop1: 0.97})
			if (err == nil) != tc.pass {
				t.Fatalf("Check: %v, want pass %v", err, tc.pass)
			}
		})
	}
}
