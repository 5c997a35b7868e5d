package verify

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/anemll/anemll/internal/arch/decoder"
	"github.com/anemll/anemll/internal/bitpack"
	"github.com/anemll/anemll/internal/hf"
	"github.com/anemll/anemll/internal/reference"
	"github.com/anemll/anemll/internal/runner"
)

// TestPackageRowsMatchTensor checks that every weight the lazy reference
// reads from packages row by row (ReadRows) equals, bit for bit, the
// whole tensor Tensor decodes: fp16 and LUT packages of ours (LUT
// embeddings included) and Apple-made LUT packages, for the whole tensor
// and for row ranges that cut LUT groups and packed index bytes anywhere.
func TestPackageRowsMatchTensor(t *testing.T) {
	ours := func(lut decoder.LUTBits) func(t *testing.T) (*runner.Files, string) {
		return func(t *testing.T) (*runner.Files, string) {
			_, comb := convertTiny(t, 2, 64, lut)
			return comb, tinyModel
		}
	}
	apple := func(t *testing.T) (*runner.Files, string) {
		p := func(n string) string { return filepath.Join(refDir, "packages", n) }
		return &runner.Files{Embeddings: p("llama_embeddings.mlpackage"), LMHead: p("llama_lm_head_lut6.mlpackage"),
			Chunks: []runner.ChunkFiles{{Combined: p("llama_FFN_PF_lut4_chunk_01of02.mlpackage")}, {Combined: p("llama_FFN_PF_lut4_chunk_02of02.mlpackage")}}}, filepath.Join(refDir, "checkpoint")
	}
	tests := []struct {
		name  string
		files func(t *testing.T) (*runner.Files, string)
	}{
		{"fp16", ours(decoder.LUTBits{})},
		{"LUT3 embeddings, LUT4 FFN, LUT6 head", ours(decoder.LUTBits{Embeddings: 3, FFN: 4, LMHead: 6})},
		{"Apple LUT4/LUT6", apple},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			files, model := tc.files(t)
			cfg, err := hf.LoadConfig(model)
			if err != nil {
				t.Fatal(err)
			}
			ck, err := hf.OpenCheckpoint(model)
			if err != nil {
				t.Fatal(err)
			}
			defer ck.Close()
			w, err := PackageWeights(files, reference.CheckpointWeights(ck), cfg)
			if err != nil {
				t.Fatal(err)
			}
			pw := w.(*packageWeights)
			defer pw.Close()
			names := append([]string{"lm_head.weight"}, ck.Names()...)
			fromPkg := 0
			for _, name := range names {
				want, shape, err := pw.Tensor(name)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				s, ok := pw.Shape(name)
				if !ok || len(s) != len(shape) || s[0] != shape[0] {
					t.Fatalf("%s: Shape %v, %v; Tensor's %v", name, s, ok, shape)
				}
				if _, in := pw.byKey[normKey(name)]; in || isHead(name) {
					fromPkg++
				}
				rows := int(shape[0])
				per := len(want) / rows
				for _, r := range [][2]int{{0, rows}, {1, min(4, rows)}, {rows / 3, rows/3 + 1}, {max(0, rows-3), rows}} {
					got := make([]float32, (r[1]-r[0])*per)
					if err := pw.ReadRows(name, r[0], r[1], got); err != nil {
						t.Fatalf("%s rows %v: %v", name, r, err)
					}
					for i, v := range got {
						if math.Float32bits(v) != math.Float32bits(want[r[0]*per+i]) {
							t.Fatalf("%s rows %v: value %d is %v, Tensor has %v", name, r, i, v, want[r[0]*per+i])
						}
					}
				}
			}
			if fromPkg < 10 {
				t.Errorf("only %d of %d weights came from the packages", fromPkg, len(names))
			}
			if err := pw.ReadRows("lm_head.weight", 0, cfg.VocabSize+1, make([]float32, (cfg.VocabSize+1)*cfg.HiddenSize)); err == nil {
				t.Error("rows beyond the vocabulary accepted")
			}
		})
	}
}

// TestDequantizeRange compares dequantizeRange on every element range
// with the whole-tensor dequantize, for palettes grouped along axis 0
// (the per-row fast path) and along other axes (the general path), at
// widths whose packed rows do not end on byte boundaries.
func TestDequantizeRange(t *testing.T) {
	tests := []struct {
		name   string
		ishape []int64
		lshape []int64
		bits   int
	}{
		{"rows, 6 bits", []int64{6, 5, 1, 1}, []int64{3, 1, 1, 1, 64, 1}, 6},
		{"per tensor, 3 bits", []int64{4, 7}, []int64{1, 1, 8, 1}, 3},
		{"columns, 4 bits", []int64{3, 6}, []int64{1, 3, 16, 1}, 4},
		{"both axes, 2 bits", []int64{4, 6, 1, 1}, []int64{2, 3, 1, 1, 4, 1}, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := int64(1)
			for _, d := range tc.ishape {
				n *= d
			}
			idx := make([]uint8, n)
			for i := range idx {
				idx[i] = uint8((i*7 + 3) % (1 << tc.bits))
			}
			tables := int64(1)
			for _, d := range tc.lshape[:len(tc.ishape)] {
				tables *= d
			}
			lut := make([]float32, tables*tc.lshape[len(tc.ishape)])
			for i := range lut {
				lut[i] = float32(i) + 0.5
			}
			want, err := dequantize(idx, tc.ishape, lut, tc.lshape)
			if err != nil {
				t.Fatal(err)
			}
			packed := bitpack.Pack(nil, idx, tc.bits)
			for e0 := int64(0); e0 < n; e0++ {
				for e1 := e0 + 1; e1 <= n; e1++ {
					got := make([]float32, e1-e0)
					if err := dequantizeRange(got, packed, tc.bits, e0, tc.ishape, lut, tc.lshape); err != nil {
						t.Fatal(err)
					}
					for i, v := range got {
						if v != want[e0+int64(i)] {
							t.Fatalf("[%d,%d): element %d is %v, want %v", e0, e1, e0+int64(i), v, want[e0+int64(i)])
						}
					}
				}
			}
		})
	}
}
