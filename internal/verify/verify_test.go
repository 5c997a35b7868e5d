package verify

import (
	"math/rand/v2"
	"path/filepath"
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
