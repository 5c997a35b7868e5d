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

// ANEMLL 0.3.5's Gemma 3 meta.yaml names the first chunk (with its
// _chunk_01of02 suffix) and gives sliding_window.
const metaGemma = `model_info:
  name: anemll-tiny-gemma3-random-ctx64
  parameters:
    context_length: 64
    batch_size: 8
    num_chunks: 2
    model_prefix: gemma3
    embeddings: gemma3_embeddings.mlmodelc
    lm_head: gemma3_lm_head.mlmodelc
    ffn: gemma3_FFN_PF_chunk_01of02.mlmodelc
    split_lm_head: 16
    sliding_window: 8
`

func TestFilesFromMetaGemma3(t *testing.T) {
	dir := t.TempDir()
	touchPkg(t, dir, "gemma3_embeddings.mlpackage", "gemma3_lm_head.mlpackage",
		"gemma3_FFN_PF_chunk_01of02.mlpackage", "gemma3_FFN_PF_chunk_02of02.mlpackage")
	os.WriteFile(filepath.Join(dir, "meta.yaml"), []byte(metaGemma), 0o644)
	f, err := FindFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Chunks) != 2 || filepath.Base(f.Chunks[0].Combined) != "gemma3_FFN_PF_chunk_01of02.mlpackage" ||
		filepath.Base(f.Chunks[1].Combined) != "gemma3_FFN_PF_chunk_02of02.mlpackage" || f.SlidingWindow != 8 {
		t.Errorf("files %+v", f)
	}
	os.WriteFile(filepath.Join(dir, "meta.yaml"), []byte(strings.Replace(metaGemma, "sliding_window: 8", "sliding_window: -8", 1)), 0o644)
	if _, err := FindFiles(dir); err == nil || !strings.Contains(err.Error(), "sliding_window -8") {
		t.Errorf("negative window: %v", err)
	}
}

func TestFindFilesRotate(t *testing.T) {
	dir := t.TempDir()
	touchPkg(t, dir, "gemma3_embeddings.mlpackage", "gemma3_lm_head_lut6.mlpackage")
	for _, kind := range []string{"FFN", "prefill", "FFN_rotate", "prefill_rotate"} {
		for _, c := range []string{"01of02", "02of02"} {
			touchPkg(t, dir, "gemma3_"+kind+"_lut4_chunk_"+c+".mlpackage")
		}
	}
	f, err := FindFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Chunks) != 2 {
		t.Fatalf("chunks %+v", f.Chunks)
	}
	c := f.Chunks[1]
	for got, want := range map[string]string{
		c.FFN: "gemma3_FFN_lut4_chunk_02of02.mlpackage", c.Prefill: "gemma3_prefill_lut4_chunk_02of02.mlpackage",
		c.FFNRotate: "gemma3_FFN_rotate_lut4_chunk_02of02.mlpackage", c.PrefillRotate: "gemma3_prefill_rotate_lut4_chunk_02of02.mlpackage",
	} {
		if filepath.Base(got) != want {
			t.Errorf("chunk 2 has %q, want %q", filepath.Base(got), want)
		}
	}
	if len(c.Paths()) != 4 || c.Combined != "" {
		t.Errorf("paths %v", c.Paths())
	}
	// Half a rotate set is refused.
	os.RemoveAll(filepath.Join(dir, "gemma3_prefill_rotate_lut4_chunk_02of02.mlpackage"))
	if _, err := FindFiles(dir); err == nil || !strings.Contains(err.Error(), "FFN_rotate and prefill_rotate") {
		t.Errorf("half rotate set: %v", err)
	}
	// Combined chunks still win; their rotate functions are found at load.
	touchPkg(t, dir, "gemma3_FFN_PF_lut4_chunk_01of01.mlpackage")
	if f, err := FindFiles(dir); err != nil || len(f.Chunks) != 1 || f.Chunks[0].Combined == "" || f.Chunks[0].FFNRotate != "" {
		t.Errorf("combined: %+v %v", f, err)
	}
}
