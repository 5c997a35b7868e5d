package coreml

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/anemll/anemll/internal/mil"
)

// refDir holds packages made by Apple's coremltools (see its README).
const refDir = "../../testdata/anemll-tiny-random"

func referencePackages(t *testing.T) []string {
	t.Helper()
	var dirs []string
	for _, set := range []string{"packages", "packages-fp16"} {
		m, err := filepath.Glob(filepath.Join(refDir, set, "*.mlpackage"))
		if err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, m...)
	}
	if len(dirs) != 16 {
		t.Fatalf("found %d reference packages, want 16", len(dirs))
	}
	return dirs
}

// TestRewriteReferencePackages reads every Apple-made package, writes it
// back, and checks the model message is equal and the weight file is
// byte-identical.
func TestRewriteReferencePackages(t *testing.T) {
	for _, dir := range referencePackages(t) {
		name := filepath.Base(filepath.Dir(dir)) + "/" + filepath.Base(dir)
		t.Run(name, func(t *testing.T) {
			pkg, err := Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer pkg.Close()
			if err := pkg.Check(); err != nil {
				t.Fatalf("check: %v", err)
			}
			out := filepath.Join(t.TempDir(), "out.mlpackage")
			if err := Write(pkg, out, WriteOptions{}); err != nil {
				t.Fatal(err)
			}
			want, err := ReadModelSpec(dir)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ReadModelSpec(out)
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(want, got) {
				t.Errorf("re-written model message differs from the original")
			}
			wb, _ := os.ReadFile(filepath.Join(dir, "Data/com.apple.CoreML/weights/weight.bin"))
			gb, _ := os.ReadFile(filepath.Join(out, "Data/com.apple.CoreML/weights/weight.bin"))
			if !bytes.Equal(wb, gb) {
				t.Errorf("weight.bin differs: %d bytes, want %d", len(gb), len(wb))
			}
		})
	}
}

func TestWriteIsDeterministicAndAtomic(t *testing.T) {
	pkg, err := Open(filepath.Join(refDir, "packages/llama_lm_head_lut6.mlpackage"))
	if err != nil {
		t.Fatal(err)
	}
	defer pkg.Close()
	// Forget the original layout so the writer lays blobs out itself.
	for _, f := range pkg.Program.Functions {
		for _, op := range f.Body.Ops {
			for _, in := range op.Inputs {
				for _, a := range in.Args {
					if a.Value != nil && a.Value.BlobFile != "" {
						b, err := a.Value.Bytes()
						if err != nil {
							t.Fatal(err)
						}
						a.Value.Data, a.Value.Source, a.Value.BlobFile = b, nil, ""
					}
				}
			}
		}
	}
	tmp := t.TempDir()
	a, b := filepath.Join(tmp, "a.mlpackage"), filepath.Join(tmp, "b.mlpackage")
	if err := Write(pkg, a, WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := Write(pkg, b, WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"Manifest.json", "Data/com.apple.CoreML/model.mlmodel", "Data/com.apple.CoreML/weights/weight.bin"} {
		x, _ := os.ReadFile(filepath.Join(a, f))
		y, _ := os.ReadFile(filepath.Join(b, f))
		if len(x) == 0 || !bytes.Equal(x, y) {
			t.Errorf("%s differs between two writes", f)
		}
	}
	if err := Write(pkg, a, WriteOptions{}); err == nil {
		t.Error("writing over an existing package without Overwrite succeeded")
	}
	if err := Write(pkg, a, WriteOptions{Overwrite: true}); err != nil {
		t.Error(err)
	}
	ents, _ := os.ReadDir(tmp)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary %s left behind", e.Name())
		}
	}
	// A failing write leaves nothing behind.
	bad := *pkg
	bad.Description.Outputs = bad.Description.Outputs[:1]
	if err := Write(&bad, filepath.Join(tmp, "c.mlpackage"), WriteOptions{}); err == nil {
		t.Fatal("package whose outputs disagree with the program was written")
	}
	if _, err := os.Stat(filepath.Join(tmp, "c.mlpackage")); !os.IsNotExist(err) {
		t.Error("failed write left the target")
	}
}

func TestBuiltPackageRoundTrip(t *testing.T) {
	b := mil.NewBuilder("main", mil.OpsetIOS18)
	ids := b.Input("input_ids", mil.TensorType(mil.Int32, 1, mil.Unknown))
	table := make([]float32, 16*4)
	for i := range table {
		table[i] = float32(i) / 8
	}
	w := b.Const("embed", mil.FP16FromFloat32([]int64{16, 4}, table))
	idx := mil.NewTensor(mil.UInt4, []int64{16, 4}, bytes.Repeat([]byte{0x21}, 32))
	lut := mil.FP16FromFloat32([]int64{2, 1, 16, 1}, make([]float32, 32))
	b.Op("constexpr_lut_to_dense", "pal", mil.In{"indices": mil.Literal{Value: idx}, "lut": mil.Literal{Value: lut}})
	h := b.Op("gather", "hidden_states", mil.In{"x": w, "indices": ids, "axis": 0})
	b.Output(h)
	f, err := b.Function()
	if err != nil {
		t.Fatal(err)
	}
	pkg := &Package{
		SpecVersion: SpecVersionIOS18,
		Program:     &mil.Program{Version: 1, Functions: []*mil.Function{f}},
		Description: Description{
			Inputs:   []Feature{{Name: "input_ids", Kind: MultiArray, DType: mil.Int32, Shape: []int64{1, 1}, Enumerated: [][]int64{{1, 1}, {1, 8}}}},
			Outputs:  []Feature{{Name: "hidden_states", Kind: MultiArray, DType: mil.Float16}},
			Metadata: Metadata{Author: "test", UserDefined: map[string]string{"k": "v"}},
		},
	}
	dir := filepath.Join(t.TempDir(), "m.mlpackage")
	if err := Write(pkg, dir, WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	back, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	var x, y bytes.Buffer
	mil.Print(&x, pkg.Program)
	mil.Print(&y, back.Program)
	// The read-back listing names blob offsets where the built one says BLOB.
	if !strings.Contains(y.String(), "offset = uint64(64)") || strings.Count(y.String(), "BLOBFILE") != 3 {
		t.Errorf("unexpected listing:\n%s", y.String())
	}
	got, err := back.Program.Functions[0].Body.Ops[1].Input("indices")[0].Value.Bytes()
	if err != nil || !bytes.Equal(got, idx.Data) {
		t.Errorf("uint4 indices read back as %x (%v)", got, err)
	}
	if back.Description.Inputs[0].Enumerated[1][1] != 8 || back.Description.Metadata.UserDefined["k"] != "v" {
		t.Errorf("description did not round-trip: %+v", back.Description)
	}
}

func TestSummarizeMatchesReferenceStructure(t *testing.T) {
	tests := []struct {
		pkg           string
		blobs, shared int
		weightBytes   map[string]int64
		ops           map[string]map[string]int
	}{
		// Numbers from structure*/ dumps made by coremltools.
		{"packages-fp16/llama_FFN_PF_chunk_02of02.mlpackage", 10, 7, nil,
			map[string]map[string]int{"infer": {"const": 162, "conv": 6, "write_state": 2, "linear": 1}, "prefill": {"const": 138, "conv": 3}}},
		{"packages/llama_lm_head_lut6.mlpackage", 16, 0, map[string]int64{"uint6": 8 * 64 * 64 * 6 / 8, "fp16": 8 * 8 * 64 * 2},
			map[string]map[string]int{"main": {"const": 58, "constexpr_lut_to_dense": 8, "conv": 8}}},
	}
	for _, tc := range tests {
		pkg, err := Open(filepath.Join(refDir, tc.pkg))
		if err != nil {
			t.Fatal(err)
		}
		s, err := Summarize(pkg)
		pkg.Close()
		if err != nil {
			t.Fatal(err)
		}
		if s.Blobs != tc.blobs || s.SharedBlobs != tc.shared {
			t.Errorf("%s: %d blobs, %d shared; want %d, %d", tc.pkg, s.Blobs, s.SharedBlobs, tc.blobs, tc.shared)
		}
		for k, v := range tc.weightBytes {
			if s.WeightBytes[k] != v {
				t.Errorf("%s: %s bytes %d, want %d", tc.pkg, k, s.WeightBytes[k], v)
			}
		}
		for _, f := range s.Functions {
			for op, n := range tc.ops[f.Name] {
				if f.Ops[op] != n {
					t.Errorf("%s %s: %d %s ops, want %d", tc.pkg, f.Name, f.Ops[op], op, n)
				}
			}
		}
		var buf bytes.Buffer
		if err := s.WriteText(&buf); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(buf.String(), "specification version: 9") {
			t.Errorf("report:\n%s", buf.String())
		}
	}
}

// TestReferenceProgramsTypeCheck re-infers every op's output types in the
// Apple-made packages: our inference must agree with coremltools'.
func TestReferenceProgramsTypeCheck(t *testing.T) {
	for _, dir := range referencePackages(t) {
		pkg, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		if err := pkg.Program.CheckTypes(); err != nil {
			t.Errorf("%s: %v", filepath.Base(dir), err)
		}
		pkg.Close()
	}
}

// TestWriteLazySources: lazy constants are produced once each, in program
// order, and read back with their bytes (equal bytes share a blob); a
// source that fails stops the write there, with its error, and leaves no
// package.
func TestWriteLazySources(t *testing.T) {
	build := func(failAt int) (*Package, *[]string) {
		var calls []string
		lazy := func(name string, dt mil.DType, shape []int64, data []byte) *mil.Value {
			return mil.LazyTensor(dt, shape, func() ([]byte, error) {
				calls = append(calls, name)
				if len(calls) == failAt {
					return nil, fmt.Errorf("source %s failed", name)
				}
				return data, nil
			})
		}
		table := make([]byte, 2*16*4)
		for i := range table {
			table[i] = byte(i)
		}
		b := mil.NewBuilder("main", mil.OpsetIOS18)
		ids := b.Input("input_ids", mil.TensorType(mil.Int32, 1, mil.Unknown))
		w := b.Const("embed", lazy("embed", mil.Float16, []int64{16, 4}, table))
		w2 := b.Const("embed2", lazy("embed2", mil.Float16, []int64{16, 4}, bytes.Clone(table)))
		idx := lazy("idx", mil.UInt4, []int64{16, 4}, bytes.Repeat([]byte{0x21}, 32))
		lut := lazy("lut", mil.Float16, []int64{2, 1, 16, 1}, make([]byte, 64))
		b.Op("constexpr_lut_to_dense", "pal", mil.In{"indices": mil.Literal{Value: idx}, "lut": mil.Literal{Value: lut}})
		h := b.Op("gather", "hidden", mil.In{"x": w, "indices": ids, "axis": 0})
		h2 := b.Op("gather", "hidden_states", mil.In{"x": w2, "indices": ids, "axis": 0})
		_ = h
		b.Output(h2)
		f, err := b.Function()
		if err != nil {
			t.Fatal(err)
		}
		return &Package{
			SpecVersion: SpecVersionIOS18,
			Program:     &mil.Program{Version: 1, Functions: []*mil.Function{f}},
			Description: Description{
				Inputs:  []Feature{{Name: "input_ids", Kind: MultiArray, DType: mil.Int32, Shape: []int64{1, 1}}},
				Outputs: []Feature{{Name: "hidden_states", Kind: MultiArray, DType: mil.Float16}},
			},
		}, &calls
	}
	pkg, calls := build(0)
	dir := filepath.Join(t.TempDir(), "m.mlpackage")
	if err := Write(pkg, dir, WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(*calls, " "); got != "embed embed2 idx lut" {
		t.Errorf("sources called as %q, want %q", got, "embed embed2 idx lut")
	}
	back, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	var listing bytes.Buffer
	mil.Print(&listing, back.Program)
	// embed and embed2 share the blob at 64; idx and lut follow.
	if n := strings.Count(listing.String(), "offset = uint64(64)"); n != 2 {
		t.Errorf("%d constants at offset 64, want 2 (embed, embed2):\n%s", n, listing.String())
	}
	for _, op := range back.Program.Functions[0].Body.Ops {
		if op.Type == "constexpr_lut_to_dense" {
			got, err := op.Input("indices")[0].Value.Bytes()
			if err != nil || !bytes.Equal(got, bytes.Repeat([]byte{0x21}, 32)) {
				t.Errorf("indices read back as %x (%v)", got, err)
			}
		}
	}

	pkg, calls = build(2)
	dir = filepath.Join(t.TempDir(), "bad.mlpackage")
	err = Write(pkg, dir, WriteOptions{})
	if err == nil || !strings.Contains(err.Error(), "source embed2 failed") {
		t.Errorf("write error %v, want the failing source's", err)
	}
	if got := strings.Join(*calls, " "); got != "embed embed2" {
		t.Errorf("sources called as %q after the failure, want %q", got, "embed embed2")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Error("failed write left the target")
	}
	ents, _ := os.ReadDir(filepath.Dir(dir))
	if len(ents) != 0 {
		t.Errorf("failed write left %v", ents)
	}
}
