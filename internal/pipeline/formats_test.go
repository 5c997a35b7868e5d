package pipeline

import (
	"bytes"
	"github.com/anemll/anemll/internal/quant"
	"os"
	"path/filepath"
	goruntime "runtime"
	"sync/atomic"
	"testing"

	"github.com/anemll/anemll/internal/arch"
	"github.com/anemll/anemll/internal/arch/decoder"
	"github.com/anemll/anemll/internal/coreml"
	"github.com/anemll/anemll/internal/hf"
	"github.com/anemll/anemll/internal/hf/synth"
)

// TestCheckpointFormats converts the same random model stored as F32, F16
// (its values rounded) and BF16, single-file and sharded. F32 and F16
// sources must give identical packages (both round to the same fp16
// values), sharding must not change a byte, and BF16 (rounded twice) must
// still convert.
func TestCheckpointFormats(t *testing.T) {
	base := synth.Options{Hidden: 64, Intermediate: 128, Layers: 3, Heads: 4, KVHeads: 2, Vocab: 96, Seed: 7}
	convert := func(o synth.Options) map[string][]byte {
		t.Helper()
		model := filepath.Join(t.TempDir(), "m")
		if err := synth.Write(model, o); err != nil {
			t.Fatal(err)
		}
		out := t.TempDir()
		s, err := Open(Options{Model: model, Output: out, ContextLength: 32, BatchSize: 8, NumChunks: 2})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		got := map[string][]byte{}
		for _, p := range []arch.Part{arch.PartEmbeddings, arch.PartLMHead, arch.PartFFN, arch.PartPrefill} {
			for i := 0; i < 2; i++ {
				if !p.Chunked() && i > 0 {
					continue
				}
				path, err := s.WritePart(p, i, out, nil)
				if err != nil {
					t.Fatal(err)
				}
				for _, f := range []string{"Data/com.apple.CoreML/weights/weight.bin", "Data/com.apple.CoreML/model.mlmodel"} {
					b, err := os.ReadFile(filepath.Join(path, f))
					if err != nil {
						t.Fatal(err)
					}
					got[filepath.Base(path)+"/"+filepath.Base(f)] = b
				}
			}
		}
		return got
	}
	same := func(a, b map[string][]byte, what string) {
		t.Helper()
		if len(a) != len(b) || len(a) != 12 {
			t.Fatalf("%s: %d vs %d files", what, len(a), len(b))
		}
		for k, v := range a {
			if !bytes.Equal(v, b[k]) {
				t.Errorf("%s: %s differs", what, k)
			}
		}
	}
	o := base
	o.DType = hf.F32
	f32 := convert(o)
	o.DType = hf.F16
	f16 := convert(o)
	same(f32, f16, "F32 vs F16")
	o.Shards = 3
	same(f16, convert(o), "F16 sharded vs single file")
	o.DType, o.Shards = hf.BF16, 0
	bf16 := convert(o)
	o.Shards = 2
	same(bf16, convert(o), "BF16 sharded vs single file")
	differs := false
	for k, v := range bf16 {
		if !bytes.Equal(v, f32[k]) {
			differs = true
		}
	}
	if !differs {
		t.Error("BF16 source gave the same weights as F32 (the rounding should show)")
	}
}

// TestLUTDeterministicAcrossGOMAXPROCS converts with palettization on one
// and on several cores: the packages must be byte-identical.
func TestLUTDeterministicAcrossGOMAXPROCS(t *testing.T) {
	run := func(procs int) map[string][32]byte {
		prev := goruntime.GOMAXPROCS(procs)
		defer goruntime.GOMAXPROCS(prev)
		out := t.TempDir()
		opts := baseOptions(out)
		opts.Only = 3
		opts.LUT.FFN = 6
		if _, err := Run(opts); err != nil {
			t.Fatal(err)
		}
		return digest(t, out)
	}
	one, four := run(1), run(4)
	if len(one) == 0 {
		t.Fatal("nothing written")
	}
	sameTree(t, one, four, "GOMAXPROCS 1 vs 4")
}

// TestPrefillReusesDecodePalettes checks that a prefill chunk written next
// to its decode chunk (reusing its palettized weights) is byte-identical
// to one palettized from scratch, and that reuse happened: with tables in
// weight.bin (4 bits, groups of 8) and with tables small enough to be
// stored inline in the program (3 bits, one table per tensor: 8 entries),
// which read back as data, not as a blob source.
func TestPrefillReusesDecodePalettes(t *testing.T) {
	for _, tc := range []struct {
		name  string
		bits  int
		group int
	}{
		{"4 bits, groups of 8 (tables in weight.bin)", 4, 0},
		{"3 bits, one table per tensor (tables inline)", 3, decoder.PerTensor},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int32
			count := func(req quant.Request) ([]uint8, []uint16, error) {
				calls.Add(1)
				return Palettize(req)
			}
			write := func(withFFN bool) map[string][32]byte {
				out := t.TempDir()
				s, err := Open(Options{Model: tinyModel, Output: out, ContextLength: 64, BatchSize: 16, NumChunks: 1,
					LUT: decoder.LUTBits{FFN: tc.bits}, LUTGroups: decoder.LUTGroups{FFN: tc.group}, palettize: count})
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				if withFFN {
					ffnPath, err := s.WritePart(arch.PartFFN, 0, out, nil)
					if err != nil {
						t.Fatal(err)
					}
					ffn, err := coreml.Open(ffnPath)
					if err != nil {
						t.Fatal(err)
					}
					pf, err := s.Conv.Part(arch.PartPrefill, 0)
					if err != nil {
						t.Fatal(err)
					}
					if n := reusePalettes(pf, ffn); n != 25 {
						t.Errorf("reused %d palettes, want 25 (7 per layer, minus the last layer's MLP the last prefill chunk skips)", n)
					}
					ffn.Close()
				}
				calls.Store(0)
				path, err := s.WritePart(arch.PartPrefill, 0, out, nil)
				if err != nil {
					t.Fatal(err)
				}
				// Written after its decode chunk, the prefill chunk palettizes
				// nothing; alone, it palettizes its 25 weights itself.
				if want := map[bool]int32{true: 0, false: 25}[withFFN]; calls.Load() != want {
					t.Errorf("prefill (decode chunk written first: %v) called the palettizer %d times, want %d", withFFN, calls.Load(), want)
				}
				return digest(t, path)
			}
			sameTree(t, write(false), write(true), "prefill with and without reuse")
		})
	}
}

func TestScaleFor(t *testing.T) {
	for _, tc := range []struct{ peak, want float64 }{
		{0, 1}, {100, 1}, {16376, 1}, {16377, 0.5}, {65504, 0.25}, {9.165e4, 0.125}, {1e6, 1.0 / 64},
	} {
		if got := ScaleFor(tc.peak); got != tc.want {
			t.Errorf("ScaleFor(%g) = %g, want %g", tc.peak, got, tc.want)
		}
	}
}
