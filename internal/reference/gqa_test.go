package reference_test

import (
	"math"
	"testing"

	"github.com/anemll/anemll/internal/hf"
	"github.com/anemll/anemll/internal/hf/synth"
	"github.com/anemll/anemll/internal/reference"
)

func TestAgainstNaive(t *testing.T) {
	tests := []struct {
		name string
		o    synth.Options
	}{
		{"MHA 4/4", synth.Options{Heads: 4, KVHeads: 4}},
		{"GQA 4/2", synth.Options{Heads: 4, KVHeads: 2}},
		{"MQA 4/1", synth.Options{Heads: 4, KVHeads: 1}},
		{"GQA 6/3 head_dim 12 tied", synth.Options{Heads: 6, KVHeads: 3, HeadDim: 12, TieEmbeddings: true}},
		{"GQA 8/2 biases", synth.Options{Heads: 8, KVHeads: 2, AttentionBias: true, MLPBias: true}},
		{"GQA 4/2 linear rope", synth.Options{Heads: 4, KVHeads: 2, RopeScaling: &hf.RopeScaling{RopeType: "linear", Factor: 3}}},
	}
	ids := []int{3, 141, 59, 26, 5, 35, 89, 97, 9}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.o
			o.Hidden, o.Intermediate, o.Layers, o.Vocab = 48, 96, 2, 160
			o.DType, o.Std, o.Seed, o.RopeTheta = hf.F32, 0.15, 11, 100
			dir := t.TempDir()
			if err := synth.Write(dir, o); err != nil {
				t.Fatal(err)
			}
			cfg, err := hf.LoadConfig(dir)
			if err != nil {
				t.Fatal(err)
			}
			ck, err := hf.OpenCheckpoint(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer ck.Close()
			m, err := reference.New(cfg, reference.CheckpointWeights(ck))
			if err != nil {
				t.Fatal(err)
			}
			got, err := m.Forward(ids)
			if err != nil {
				t.Fatal(err)
			}
			get := func(name string) []float32 {
				v, err := ck.Float32(name)
				if err != nil {
					t.Fatal(err)
				}
				return v
			}
			want := naiveForward(cfg, llamaNaive(cfg), get, ids)
			var worst, scale float64
			for p := range want {
				for v := range want[p] {
					worst = max(worst, math.Abs(float64(got[p][v])-want[p][v]))
					scale = max(scale, math.Abs(want[p][v]))
				}
			}
			t.Logf("max |Δ| = %.3g, max |logit| = %.3g", worst, scale)
			if worst > 1e-5*max(1, scale) {
				t.Errorf("reference differs from the naive loop by %g (logits up to %g)", worst, scale)
			}
			// And the cached session agrees with the full pass.
			s := m.NewSession()
			for p, id := range ids {
				row, err := s.Step(id)
				if err != nil {
					t.Fatal(err)
				}
				for v := range row {
					if math.Abs(float64(row[v]-got[p][v])) > 1e-5 {
						t.Fatalf("session pos %d logit %d: %g vs %g", p, v, row[v], got[p][v])
					}
				}
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	o := synth.Options{Hidden: 32, Intermediate: 64, Layers: 1, Heads: 2, KVHeads: 1, Vocab: 50, DType: hf.F32}
	dir := t.TempDir()
	if err := synth.Write(dir, o); err != nil {
		t.Fatal(err)
	}
	cfg, _ := hf.LoadConfig(dir)
	ck, err := hf.OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	w := reference.CheckpointWeights(ck)
	if _, err := reference.New(cfg, w); err != nil {
		t.Fatalf("good checkpoint refused: %v", err)
	}
	bad := *cfg
	bad.IntermediateSize = 65 // shapes no longer match
	if _, err := reference.New(&bad, w); err == nil {
		t.Error("shape mismatch accepted")
	}
	bad = *cfg
	bad.AttentionBias = true // biases missing from the file
	if _, err := reference.New(&bad, w); err == nil {
		t.Error("missing bias accepted")
	}
	bad = *cfg
	bad.HiddenAct = "gelu"
	if _, err := reference.New(&bad, w); err == nil {
		t.Error("invalid config accepted")
	}
}

// BenchmarkStepTiny times one cached decoding step of the tiny trained model
// at position ~64.
func BenchmarkStepTiny(b *testing.B) {
	m := loadTiny(b, "bf16")
	s := m.NewSession()
	for i := range 64 {
		if _, err := s.Step(i); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if s.Pos() > 480 {
			b.StopTimer()
			s = m.NewSession()
			b.StartTimer()
		}
		if _, err := s.Step(i % 1000); err != nil {
			b.Fatal(err)
		}
	}
}
