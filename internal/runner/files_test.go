package runner

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func touchPkg(t *testing.T, dir string, names ...string) {
	t.Helper()
	for _, n := range names {
		if err := os.MkdirAll(filepath.Join(dir, n), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

const meta = `model_info:
  name: anemll-x-ctx512
  parameters:
    context_length: 512
    batch_size: 64
    lut_embeddings: none
    lut_ffn: 4
    lut_lmhead: 6
    num_chunks: 2
    model_prefix: llama
    embeddings: llama_embeddings.mlmodelc
    lm_head: llama_lm_head_lut6.mlmodelc
    ffn: llama_FFN_PF_lut4.mlmodelc
    split_lm_head: 8
`

func TestFilesFromMeta(t *testing.T) {
	dir := t.TempDir()
	touchPkg(t, dir, "llama_embeddings.mlpackage", "llama_lm_head_lut6.mlpackage",
		"llama_FFN_PF_lut4_chunk_01of02.mlpackage", "llama_FFN_PF_lut4_chunk_02of02.mlpackage")
	os.WriteFile(filepath.Join(dir, "meta.yaml"), []byte(meta), 0o644)
	f, err := FindFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(f.Embeddings) != "llama_embeddings.mlpackage" || filepath.Base(f.LMHead) != "llama_lm_head_lut6.mlpackage" ||
		len(f.Chunks) != 2 || filepath.Base(f.Chunks[1].Combined) != "llama_FFN_PF_lut4_chunk_02of02.mlpackage" {
		t.Errorf("files %+v", f)
	}
	os.RemoveAll(filepath.Join(dir, "llama_FFN_PF_lut4_chunk_02of02.mlpackage"))
	if _, err := FindFiles(dir); err == nil || !strings.Contains(err.Error(), "llama_FFN_PF_lut4_chunk_02of02.mlpackage") {
		t.Errorf("missing chunk: %v", err)
	}
}

func TestFindFilesWithoutMeta(t *testing.T) {
	dir := t.TempDir()
	touchPkg(t, dir, "llama_embeddings.mlpackage", "llama_lm_head.mlpackage",
		"llama_FFN_chunk_01of01.mlpackage", "llama_prefill_chunk_01of01.mlpackage")
	f, err := FindFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Chunks) != 1 || f.Chunks[0].Combined != "" || filepath.Base(f.Chunks[0].Prefill) != "llama_prefill_chunk_01of01.mlpackage" {
		t.Errorf("separate chunks: %+v", f.Chunks)
	}
	// Combined chunks are preferred once present.
	touchPkg(t, dir, "llama_FFN_PF_chunk_01of01.mlpackage")
	if f, err = FindFiles(dir); err != nil || f.Chunks[0].Combined == "" {
		t.Errorf("combined not preferred: %+v %v", f, err)
	}
	// Two LM heads are ambiguous.
	touchPkg(t, dir, "llama_lm_head_lut6.mlpackage")
	if _, err := FindFiles(dir); err == nil || !strings.Contains(err.Error(), "several _lm_head packages") {
		t.Errorf("ambiguity: %v", err)
	}
}
