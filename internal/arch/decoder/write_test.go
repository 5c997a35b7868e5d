package decoder

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/anemll/anemll/internal/arch"
	"github.com/anemll/anemll/internal/bitpack"
	"github.com/anemll/anemll/internal/coreml"
	"github.com/anemll/anemll/internal/mil"
	"github.com/anemll/anemll/internal/quant"
)

// TestWritePackages writes every package of the tiny model with the
// package writer, reads it back and compares interface, metadata and
// program; weight.bin sizes are logged next to the reference's.
func TestWritePackages(t *testing.T) {
	cfg, ckpt := loadTiny(t)
	c := newConv(t, cfg, ckpt, Options{ContextLength: 256, StateLength: 512, NumChunks: 2,
		LUT: LUTBits{FFN: 4, LMHead: 6}, Palettize: testPalettize, Eligible: quant.Eligible})
	dir := t.TempDir()
	for _, p := range arch.Parts {
		for i := 0; i < map[bool]int{true: 2, false: 1}[p.Chunked()]; i++ {
			name, err := c.FileName(p, i)
			if err != nil {
				t.Fatal(err)
			}
			pkg := build(t, c, p, i)
			path := filepath.Join(dir, name)
			if err := coreml.Write(pkg, path, coreml.WriteOptions{}); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			back, err := coreml.Open(path)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if back.SpecVersion != 9 || blobRef.ReplaceAllString(printProgram(t, back.Program), "BLOB") != blobRef.ReplaceAllString(printProgram(t, pkg.Program), "BLOB") {
				t.Errorf("%s: program changed in the round trip", name)
			}
			compareWeights(t, name, pkg, back)
			for _, fn := range pkg.Program.FunctionNames() {
				a, _ := pkg.Description.Function(fn)
				b, err := back.Description.Function(fn)
				if err != nil {
					t.Fatal(err)
				}
				if fa, fb := featureLines(a), featureLines(b); len(fa) != len(fb) || fmtLines(fa) != fmtLines(fb) {
					t.Errorf("%s/%s: features %v, read back %v", name, fn, fa, fb)
				}
			}
			for k, v := range pkg.Description.Metadata.UserDefined {
				if back.Description.Metadata.UserDefined[k] != v {
					t.Errorf("%s: metadata %s lost", name, k)
				}
			}
			st, err := os.Stat(filepath.Join(path, "Data", "com.apple.CoreML", "weights", "weight.bin"))
			if err != nil {
				t.Fatal(err)
			}
			// The same blob set (after the writer merges identical values) gives
			// the size of the package ANEMLL + coremltools wrote.
			refDump, err := os.ReadFile(filepath.Join("testdata", "tiny-random", "structure", strings.TrimSuffix(name, arch.PackageExt)+".txt"))
			if err != nil {
				t.Fatal(err)
			}
			m := regexp.MustCompile(`weight\.bin size: (\d+)`).FindSubmatch(refDump)
			if m == nil || string(m[1]) != strconv.FormatInt(st.Size(), 10) {
				t.Errorf("%s: weight.bin is %d bytes, reference %s", name, st.Size(), m[1])
			}
			t.Logf("%-44s weight.bin %7d bytes", name, st.Size())
		}
	}
}

var blobRef = regexp.MustCompile(`BLOB(FILE)?\([^)]*\)( bytes\)|, offset = uint64\(\d+\)\))?`)

// compareWeights checks that every constant and literal read back from
// weight.bin has the bytes our lazy values produce.
func compareWeights(t *testing.T, name string, a, b *coreml.Package) {
	t.Helper()
	n := 0
	for fi, fa := range a.Program.Functions {
		fb := b.Program.Function(fa.Name)
		if fb == nil || len(fb.Body.Ops) != len(fa.Body.Ops) {
			t.Fatalf("%s: function %d differs", name, fi)
		}
		for i, op := range fa.Body.Ops {
			ob := fb.Body.Ops[i]
			var va, vb []*mil.Value
			if v := op.ConstValue(); v != nil {
				va, vb = append(va, v), append(vb, ob.ConstValue())
			}
			for j, in := range op.Inputs {
				for k, arg := range in.Args {
					if arg.Value != nil {
						va, vb = append(va, arg.Value), append(vb, ob.Inputs[j].Args[k].Value)
					}
				}
			}
			for k := range va {
				if va[k].Source == nil {
					continue
				}
				x, y := valueBytes(t, va[k]), valueBytes(t, vb[k])
				if !bytes.Equal(x, y) {
					t.Errorf("%s: %s: weight bytes differ after writing", name, op.Name)
				}
				n++
			}
		}
	}
	if n == 0 {
		t.Errorf("%s: no weights compared", name)
	}
}

func fmtLines(s []string) string {
	out := ""
	for _, l := range s {
		out += l + "\n"
	}
	return out
}

// TestWriteRejectsIndexOutOfRange: a palettizer handing back an index the
// LUT width cannot hold fails the write with an error naming the tensor
// and the index, instead of storing a masked index.
func TestWriteRejectsIndexOutOfRange(t *testing.T) {
	cfg, ckpt := loadTiny(t)
	bad := func(req quant.Request) ([]uint8, []uint16, error) {
		idx, lut, err := testPalettize(req)
		if err == nil && strings.Contains(req.Name, "mlp.up_proj") {
			idx[len(idx)-3] = 1 << req.Bits
		}
		return idx, lut, err
	}
	c := newConv(t, cfg, ckpt, Options{ContextLength: 64, NumChunks: 1, LUT: LUTBits{FFN: 4},
		Palettize: bad, Eligible: quant.Eligible})
	pkg := build(t, c, arch.PartFFN, 0)
	err := coreml.Write(pkg, filepath.Join(t.TempDir(), "ffn.mlpackage"), coreml.WriteOptions{})
	if err == nil || !strings.Contains(err.Error(), "mlp.up_proj") || !strings.Contains(err.Error(), "out of range") {
		t.Fatalf("write error %v, want one naming mlp.up_proj and the range", err)
	}
}

// TestPackIndicesParallel: the parallel packing of a large weight gives
// bitpack.PackInRange's bytes at every width, for lengths that do not
// split evenly, and the same error, naming the first bad index, when one
// is out of range.
func TestPackIndicesParallel(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(3))
	for _, bits := range []int{1, 3, 4, 6, 8} {
		for _, n := range []int{5, 2*parallelPackMin + 13, 3*parallelPackMin - 1} {
			ind := make([]uint8, n)
			for i := range ind {
				ind[i] = uint8((i*2654435761)>>7) & uint8(1<<bits-1)
			}
			want, err := bitpack.PackInRange(nil, ind, bits)
			if err != nil {
				t.Fatal(err)
			}
			got, err := packIndices(ind, bits)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("bits %d n %d: %d bytes (%v), differ from PackInRange's %d", bits, n, len(got), err, len(want))
			}
			if bits == 8 {
				continue
			}
			ind[n-n/3] = 1 << bits
			ind[n-2] = 1 << bits
			_, err = packIndices(ind, bits)
			if want := bitpack.CheckRange(ind, bits); err == nil || err.Error() != want.Error() {
				t.Errorf("bits %d n %d: error %v, want %v", bits, n, err, want)
			}
		}
	}
}
