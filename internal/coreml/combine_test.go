package coreml

import (
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/anemll/anemll/internal/coreml/spec"
	"github.com/anemll/anemll/internal/mil"
)

// TestCombineReferencePackages merges Apple-made FFN and prefill chunks and
// compares the result with the multifunction package coremltools made from
// the same inputs.
func TestCombineReferencePackages(t *testing.T) {
	tests := []struct {
		set, ffn, prefill, combined string
		sharedBlobs                 int
	}{
		{"packages", "llama_FFN_lut4_chunk_01of02", "llama_prefill_lut4_chunk_01of02", "llama_FFN_PF_lut4_chunk_01of02", 15},
		{"packages", "llama_FFN_lut4_chunk_02of02", "llama_prefill_lut4_chunk_02of02", "llama_FFN_PF_lut4_chunk_02of02", 9},
		{"packages-fp16", "llama_FFN_chunk_01of02", "llama_prefill_chunk_01of02", "llama_FFN_PF_chunk_01of02", 10},
		{"packages-fp16", "llama_FFN_chunk_02of02", "llama_prefill_chunk_02of02", "llama_FFN_PF_chunk_02of02", 7},
	}
	for _, tc := range tests {
		t.Run(tc.combined, func(t *testing.T) {
			open := func(name string) *Package {
				p, err := Open(filepath.Join(refDir, tc.set, name+".mlpackage"))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { p.Close() })
				return p
			}
			ffn, pf := open(tc.ffn), open(tc.prefill)
			got, err := Combine(Part{"infer", ffn}, Part{"prefill", pf})
			if err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(t.TempDir(), "c.mlpackage")
			if err := Write(got, out, WriteOptions{}); err != nil {
				t.Fatal(err)
			}
			refPath := filepath.Join(refDir, tc.set, tc.combined+".mlpackage")
			want, err := ReadModelSpec(refPath)
			if err != nil {
				t.Fatal(err)
			}
			have, err := ReadModelSpec(out)
			if err != nil {
				t.Fatal(err)
			}
			// The function descriptions must equal coremltools' exactly.
			if !proto.Equal(&spec.ModelDescription{Functions: want.Description.Functions, DefaultFunctionName: want.Description.DefaultFunctionName},
				&spec.ModelDescription{Functions: have.Description.Functions, DefaultFunctionName: have.Description.DefaultFunctionName}) {
				t.Errorf("function descriptions differ from coremltools'")
			}
			if have.SpecificationVersion != 9 {
				t.Errorf("spec version %d", have.SpecificationVersion)
			}
			back, err := Open(out)
			if err != nil {
				t.Fatal(err)
			}
			defer back.Close()
			s, err := Summarize(back)
			if err != nil {
				t.Fatal(err)
			}
			if s.SharedBlobs != tc.sharedBlobs {
				t.Errorf("%d blobs shared between functions, coremltools shares %d", s.SharedBlobs, tc.sharedBlobs)
			}
			size := func(p string) int64 {
				st, err := os.Stat(filepath.Join(p, "Data/com.apple.CoreML/weights/weight.bin"))
				if err != nil {
					t.Fatal(err)
				}
				return st.Size()
			}
			biggest := max(size(filepath.Join(refDir, tc.set, tc.ffn+".mlpackage")), size(filepath.Join(refDir, tc.set, tc.prefill+".mlpackage")))
			if got := size(out); float64(got) > 1.02*float64(biggest) {
				t.Errorf("combined weight.bin %d bytes > 1.02 × larger input %d", got, biggest)
			} else {
				t.Logf("combined weight.bin %d bytes; inputs' larger %d; coremltools' combined %d", got, biggest, size(refPath))
			}
		})
	}
}

// TestOpenSharesBlobValues checks that a package read from disk gives one
// Value per blob, so functions referring to the same weight share it.
func TestOpenSharesBlobValues(t *testing.T) {
	pkg, err := Open(filepath.Join(refDir, "packages/llama_FFN_PF_lut4_chunk_01of02.mlpackage"))
	if err != nil {
		t.Fatal(err)
	}
	defer pkg.Close()
	byOffset := map[uint64]map[*mil.Value]bool{}
	for _, f := range pkg.Program.Functions {
		for _, op := range f.Body.Ops {
			var vals []*mil.Value
			for _, a := range op.Attrs {
				vals = append(vals, a.Value)
			}
			for _, in := range op.Inputs {
				for _, a := range in.Args {
					if a.Value != nil {
						vals = append(vals, a.Value)
					}
				}
			}
			for _, v := range vals {
				if v.BlobFile != "" {
					if byOffset[v.BlobOffset] == nil {
						byOffset[v.BlobOffset] = map[*mil.Value]bool{}
					}
					byOffset[v.BlobOffset][v] = true
				}
			}
		}
	}
	if len(byOffset) != 15 {
		t.Fatalf("%d blobs referenced, want 15", len(byOffset))
	}
	for off, vs := range byOffset {
		if len(vs) != 1 {
			t.Errorf("blob at %d has %d distinct Values", off, len(vs))
		}
	}
}
