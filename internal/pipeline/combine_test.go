package pipeline

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCombineRefusesChunksOfDifferentConversions combines the FFN chunk of
// a context-64 conversion with the prefill chunk of a context-128 one: their
// KV-cache states differ, so the package could not run, and CombineFiles
// must refuse it with both files named and write nothing.
func TestCombineRefusesChunksOfDifferentConversions(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	for _, c := range []struct {
		dir  string
		ctx  int
		only int
	}{{a, 64, 3}, {b, 128, 4}} {
		opts := baseOptions(c.dir)
		opts.ContextLength, opts.Only = c.ctx, c.only
		if _, err := Run(opts); err != nil {
			t.Fatal(err)
		}
	}
	ffn := filepath.Join(a, "llama_FFN_lut4_chunk_01of02.mlpackage")
	pf := filepath.Join(b, "llama_prefill_lut4_chunk_01of02.mlpackage")
	out := filepath.Join(t.TempDir(), "llama_FFN_PF_lut4_chunk_01of02.mlpackage")
	err := CombineFiles(ffn, pf, out, io.Discard)
	if err == nil {
		t.Fatal("combined chunks of different conversions")
	}
	for _, want := range []string{"model_model_kv_cache_0", "[8 2 64 32]", "[8 2 128 32]", "different conversions", ffn, pf} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if _, serr := os.Stat(out); !os.IsNotExist(serr) {
		t.Errorf("%s written (stat: %v)", out, serr)
	}
}
