package runtime_test

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/anemll/anemll/internal/arch"
	"github.com/anemll/anemll/internal/arch/decoder"
	"github.com/anemll/anemll/internal/coreml"
	"github.com/anemll/anemll/internal/mil"
	"github.com/anemll/anemll/internal/pipeline"
	"github.com/anemll/anemll/internal/runner"
	"github.com/anemll/anemll/internal/runtime"
)

var update = flag.Bool("update", false, "re-record testdata/golden.json from the current code")

const goldenFile = "testdata/golden.json"

// golden is one recorded run: a hash of the packages it ran (so a changed
// converter is told apart from a changed runtime), a hash of every logit
// and of the final KV cache, and the greedy tokens.
type golden struct {
	Packages string `json:"packages"`
	Outputs  string `json:"outputs"`
	Tokens   []int  `json:"tokens"`
}

// goldenCase is a model to run: its files, made on demand.
type goldenCase struct {
	name  string
	files func(t *testing.T) *runner.Files
}

const (
	tinyRandom = "../../testdata/anemll-tiny-random"
	fortunes   = "../../testdata/tiny-llama-fortunes/bf16"
)

// tinyRandomFiles names the reference packages of anemll-tiny-random.
func tinyRandomFiles(dir, lut string, combined bool) func(*testing.T) *runner.Files {
	return func(*testing.T) *runner.Files {
		d := filepath.Join(tinyRandom, dir)
		head := "llama_lm_head.mlpackage"
		if lut != "" {
			head = "llama_lm_head_lut6.mlpackage"
		}
		f := &runner.Files{Dir: d, Embeddings: filepath.Join(d, "llama_embeddings.mlpackage"), LMHead: filepath.Join(d, head)}
		for i := 1; i <= 2; i++ {
			c := runner.ChunkFiles{}
			if combined {
				c.Combined = filepath.Join(d, fmt.Sprintf("llama_FFN_PF%s_chunk_%02dof02.mlpackage", lut, i))
			} else {
				c.FFN = filepath.Join(d, fmt.Sprintf("llama_FFN%s_chunk_%02dof02.mlpackage", lut, i))
				c.Prefill = filepath.Join(d, fmt.Sprintf("llama_prefill%s_chunk_%02dof02.mlpackage", lut, i))
			}
			f.Chunks = append(f.Chunks, c)
		}
		return f
	}
}

// convertFortunes converts the bundled trained model with our converter.
func convertFortunes(chunks int, lut decoder.LUTBits) func(*testing.T) *runner.Files {
	return func(t *testing.T) *runner.Files {
		dir := t.TempDir()
		s, err := pipeline.Open(pipeline.Options{Model: fortunes, Output: dir, ContextLength: 256, BatchSize: 64, NumChunks: chunks, LUT: lut})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		write := func(p arch.Part, i int) string {
			path, err := s.WritePart(p, i, dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			return path
		}
		f := &runner.Files{Dir: dir, Embeddings: write(arch.PartEmbeddings, 0), LMHead: write(arch.PartLMHead, 0)}
		for i := range s.Conv.Layout() {
			f.Chunks = append(f.Chunks, runner.ChunkFiles{FFN: write(arch.PartFFN, i), Prefill: write(arch.PartPrefill, i)})
		}
		return f
	}
}

var goldenCases = []goldenCase{
	{"tiny-random fp16 separate", tinyRandomFiles("packages-fp16", "", false)},
	{"tiny-random fp16 combined", tinyRandomFiles("packages-fp16", "", true)},
	{"tiny-random lut separate", tinyRandomFiles("packages", "_lut4", false)},
	{"tiny-random lut combined", tinyRandomFiles("packages", "_lut4", true)},
	{"fortunes fp16 1 chunk", convertFortunes(1, decoder.LUTBits{})},
	{"fortunes lut4/6 2 chunks", convertFortunes(2, decoder.LUTBits{FFN: 4, LMHead: 6})},
}

// hashPackages hashes what the runtime computes from in the model's
// packages: each program as mil.Print shows it and each weight file (not
// the metadata, which a version bump changes).
func hashPackages(t *testing.T, f *runner.Files) string {
	h := sha256.New()
	paths := []string{f.Embeddings, f.LMHead}
	for _, c := range f.Chunks {
		paths = append(paths, c.Combined, c.FFN, c.Prefill)
	}
	for _, p := range paths {
		if p == "" {
			continue
		}
		pkg, err := coreml.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(h, filepath.Base(p)+"\x00")
		if err := mil.Print(h, pkg.Program); err != nil {
			t.Fatal(err)
		}
		pkg.Close()
		err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || filepath.Base(filepath.Dir(path)) != "weights" {
				return err
			}
			r, err := os.Open(path)
			if err != nil {
				return err
			}
			defer r.Close()
			io.WriteString(h, d.Name()+"\x00")
			_, err = io.Copy(h, r)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

// runGolden prefills a 70-token prompt (two batches), decodes 12 greedy
// tokens, and hashes every logit and the final KV cache bit for bit.
func runGolden(t *testing.T, f *runner.Files) golden {
	m, err := runner.Load(f)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	put := func(v []float32) {
		var b [4]byte
		for _, x := range v {
			binary.LittleEndian.PutUint32(b[:], math.Float32bits(x))
			h.Write(b[:])
		}
	}
	prompt := make([]int, 70)
	for i := range prompt {
		prompt[i] = (i*37 + 11) % 500
	}
	if err := m.Prefill(prompt[:len(prompt)-1]); err != nil {
		t.Fatal(err)
	}
	var tokens []int
	id, pos := prompt[len(prompt)-1], len(prompt)-1
	for range 12 {
		logits, err := m.Decode(id, pos)
		if err != nil {
			t.Fatal(err)
		}
		put(logits)
		id, pos = runner.Argmax(logits), pos+1
		tokens = append(tokens, id)
	}
	snap := m.Snapshot()
	for _, n := range snap.Names() {
		io.WriteString(h, n)
		put(snap.Tensor(n).F)
	}
	return golden{Outputs: hex.EncodeToString(h.Sum(nil)), Tokens: tokens}
}

// TestGoldenOutputs checks that the interpreter's outputs on the reference
// packages and on packages converted from the bundled model are bit for
// bit those recorded in testdata/golden.json (per kernel flavour); run
// with -update to re-record after an intended numerical change.
func TestGoldenOutputs(t *testing.T) {
	if testing.Short() {
		t.Skip("converts and runs six models")
	}
	all := map[string]map[string]golden{}
	if b, err := os.ReadFile(goldenFile); err == nil {
		if err := json.Unmarshal(b, &all); err != nil {
			t.Fatalf("%s: %v", goldenFile, err)
		}
	} else if !*update {
		t.Fatal(err)
	}
	flavour := runtime.KernelFlavour()
	want := all[flavour]
	if want == nil {
		if !*update {
			t.Skipf("no goldens recorded for the %q kernels; record them with -update", flavour)
		}
		want = map[string]golden{}
		all[flavour] = want
	}
	for _, c := range goldenCases {
		t.Run(c.name, func(t *testing.T) {
			f := c.files(t)
			got := runGolden(t, f)
			got.Packages = hashPackages(t, f)
			if *update {
				want[c.name] = got
				return
			}
			w, ok := want[c.name]
			switch {
			case !ok:
				t.Fatalf("no golden for %q; record it with -update", c.name)
			case w.Packages != got.Packages:
				t.Fatalf("the packages differ from those the golden was recorded on (converter changed?); check the runtime on the old converter, then re-record with -update")
			case w.Outputs != got.Outputs:
				t.Fatalf("outputs hash %s, golden %s (tokens %v, golden %v)", got.Outputs, w.Outputs, got.Tokens, w.Tokens)
			}
		})
	}
	if *update {
		b, err := json.MarshalIndent(all, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(goldenFile, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestStateReadsWithoutCopies checks that in the golden models (ANEMLL's
// Apple-made packages and our own) every op that reads the KV-cache state
// reads its half bits directly: no op gets a widened fp32 copy of a state
// (which would cost a state-sized buffer per call).
func TestStateReadsWithoutCopies(t *testing.T) {
	for _, gc := range goldenCases {
		t.Run(gc.name, func(t *testing.T) {
			f := gc.files(t)
			for _, c := range f.Chunks {
				for _, p := range []string{c.Combined, c.FFN, c.Prefill} {
					if p == "" {
						continue
					}
					pkg, err := coreml.Open(p)
					if err != nil {
						t.Fatal(err)
					}
					m, err := runtime.Load(pkg.Program)
					pkg.Close()
					if err != nil {
						t.Fatal(err)
					}
					if w := runtime.WidenedOps(m); len(w) > 0 {
						t.Errorf("%s: ops reading a widened state copy: %v", filepath.Base(p), w)
					}
				}
			}
		})
	}
}
