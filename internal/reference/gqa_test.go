package reference_test

import (
	"fmt"
	"math"
	"testing"

	"github.com/anemll/anemll/internal/hf"
	"github.com/anemll/anemll/internal/hf/synth"
	"github.com/anemll/anemll/internal/reference"
)

// naiveForward is a deliberately literal float64 transcription of HF
// LlamaForCausalLM: tensors as nested slices, repeat_kv materialised as a
// copy, rotate_half with cat(freqs, freqs), an explicit -Inf causal mask.
func naiveForward(cfg *hf.Config, get func(string) []float32, ids []int) [][]float64 {
	H, hd, nh, nkv := cfg.HiddenSize, cfg.HeadDim, cfg.NumAttentionHeads, cfg.NumKeyValueHeads
	T := len(ids)
	linear := func(x []float64, name string, out int, bias bool) []float64 {
		w := get(name + ".weight")
		in := len(x)
		y := make([]float64, out)
		for o := range out {
			for i := range in {
				y[o] += float64(w[o*in+i]) * x[i]
			}
			if bias {
				y[o] += float64(get(name + ".bias")[o])
			}
		}
		return y
	}
	norm := func(x []float64, name string) []float64 {
		g := get(name)
		var ms float64
		for _, v := range x {
			ms += v * v / float64(len(x))
		}
		y := make([]float64, len(x))
		for i := range x {
			y[i] = float64(g[i]) * x[i] / math.Sqrt(ms+cfg.RMSNormEps)
		}
		return y
	}
	// split reshapes [n·hd] into n heads.
	split := func(x []float64, n int) [][]float64 {
		out := make([][]float64, n)
		for h := range n {
			out[h] = x[h*hd : (h+1)*hd]
		}
		return out
	}
	posDiv := 1.0 // "linear" rope scaling divides the positions
	if rs := cfg.RopeScaling; rs != nil && rs.RopeType == "linear" {
		posDiv = rs.Factor
	}
	rope := func(x []float64, pos int) []float64 {
		cos, sin := make([]float64, hd), make([]float64, hd)
		for i := 0; i < hd/2; i++ {
			f := float64(pos) / posDiv / math.Pow(cfg.RopeTheta, float64(2*i)/float64(hd))
			cos[i], cos[i+hd/2] = math.Cos(f), math.Cos(f)
			sin[i], sin[i+hd/2] = math.Sin(f), math.Sin(f)
		}
		rot := append(append([]float64{}, x[hd/2:]...), x[:hd/2]...)
		for i := 0; i < hd/2; i++ {
			rot[i] = -rot[i]
		}
		y := make([]float64, hd)
		for i := range y {
			y[i] = x[i]*cos[i] + rot[i]*sin[i]
		}
		return y
	}
	emb := get("model.embed_tokens.weight")
	x := make([][]float64, T)
	for t, id := range ids {
		x[t] = make([]float64, H)
		for i := range H {
			x[t][i] = float64(emb[id*H+i])
		}
	}
	for l := range cfg.NumHiddenLayers {
		p := fmt.Sprintf("model.layers.%d.", l)
		q := make([][][]float64, T) // [T][nh][hd]
		k := make([][][]float64, T) // [T][nkv][hd]
		v := make([][][]float64, T)
		for t := range T {
			h := norm(x[t], p+"input_layernorm.weight")
			q[t] = split(linear(h, p+"self_attn.q_proj", nh*hd, cfg.AttentionBias), nh)
			k[t] = split(linear(h, p+"self_attn.k_proj", nkv*hd, cfg.AttentionBias), nkv)
			v[t] = split(linear(h, p+"self_attn.v_proj", nkv*hd, cfg.AttentionBias), nkv)
			for h := range nh {
				q[t][h] = rope(q[t][h], t)
			}
			for h := range nkv {
				k[t][h] = rope(k[t][h], t)
			}
		}
		// repeat_kv: query head h uses kv head h / (nh/nkv).
		g := nh / nkv
		krep := make([][][]float64, T)
		vrep := make([][][]float64, T)
		for t := range T {
			for j := range nkv {
				for r := 0; r < g; r++ {
					krep[t] = append(krep[t], k[t][j])
					vrep[t] = append(vrep[t], v[t][j])
				}
			}
		}
		for t := range T {
			attn := make([]float64, 0, nh*hd)
			for h := range nh {
				w := make([]float64, T)
				for j := range T {
					if j > t {
						w[j] = math.Inf(-1)
						continue
					}
					for c := range hd {
						w[j] += q[t][h][c] * krep[j][h][c]
					}
					w[j] /= math.Sqrt(float64(hd))
				}
				mx := math.Inf(-1)
				for _, s := range w {
					mx = math.Max(mx, s)
				}
				var sum float64
				for j := range w {
					w[j] = math.Exp(w[j] - mx)
					sum += w[j]
				}
				for c := range hd {
					var o float64
					for j := range T {
						o += w[j] / sum * vrep[j][h][c]
					}
					attn = append(attn, o)
				}
			}
			o := linear(attn, p+"self_attn.o_proj", H, cfg.AttentionBias)
			for i := range H {
				x[t][i] += o[i]
			}
			h := norm(x[t], p+"post_attention_layernorm.weight")
			gate := linear(h, p+"mlp.gate_proj", cfg.IntermediateSize, cfg.MLPBias)
			up := linear(h, p+"mlp.up_proj", cfg.IntermediateSize, cfg.MLPBias)
			for i := range gate {
				gate[i] = gate[i] / (1 + math.Exp(-gate[i])) * up[i]
			}
			d := linear(gate, p+"mlp.down_proj", H, cfg.MLPBias)
			for i := range H {
				x[t][i] += d[i]
			}
		}
	}
	head := "lm_head"
	if cfg.TieWordEmbeddings {
		head = "model.embed_tokens"
	}
	out := make([][]float64, T)
	for t := range T {
		out[t] = linear(norm(x[t], "model.norm.weight"), head, cfg.VocabSize, false)
	}
	return out
}

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
			want := naiveForward(cfg, get, ids)
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
