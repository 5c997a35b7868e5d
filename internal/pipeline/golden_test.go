package pipeline

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/anemll/anemll/internal/arch/decoder"
)

var updateGolden = flag.Bool("update-golden", false, "rewrite testdata/golden-*.txt from this run")

// TestGoldenHashes pins the bytes of every package file of two LLaMA
// conversions of the bundled model: refactoring the shared decoder or
// adding model families must leave LLaMA output byte-identical. The hashes
// were recorded from the converter before the model-family table existed.
// Regenerate (only for an intended change of output) with
// go test ./internal/pipeline -run TestGoldenHashes -update-golden.
func TestGoldenHashes(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Options)
	}{
		{"llama-lut", func(o *Options) { o.LUT = decoder.LUTBits{Embeddings: 6, FFN: 4, LMHead: 6} }},
		{"llama-fp16-chunk3", func(o *Options) { o.LUT = decoder.LUTBits{}; o.NumChunks = 3 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := t.TempDir()
			opts := baseOptions(out)
			tc.edit(&opts)
			if _, err := Run(opts); err != nil {
				t.Fatal(err)
			}
			var lines []string
			for rel, sum := range digest(t, out) {
				if strings.Contains(rel, ".mlpackage") {
					lines = append(lines, fmt.Sprintf("%x  %s", sum, filepath.ToSlash(rel)))
				}
			}
			sort.Strings(lines)
			got := strings.Join(lines, "\n") + "\n"
			path := filepath.Join("testdata", "golden-"+tc.name+".txt")
			if *updateGolden {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("package bytes changed:\n got\n%s\nwant\n%s", got, want)
			}
		})
	}
}
