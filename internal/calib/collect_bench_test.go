package calib

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/anemll/anemll/internal/hf"
	"github.com/anemll/anemll/internal/reference"
)

type mapWeights map[string]tensor

type tensor struct {
	d     []float32
	shape []int64
}

func (m mapWeights) Tensor(name string) ([]float32, []int64, error) {
	t, ok := m[name]
	if !ok {
		return nil, nil, fmt.Errorf("no %s", name)
	}
	return t.d, t.shape, nil
}

// BenchmarkCollectMid times statistics collection (the reference forward
// pass in its fast mode, as the pipeline runs it, and the Gram matrices)
// on 512 tokens of a random two-layer model of the mid-size benchmark
// shape.
func BenchmarkCollectMid(b *testing.B) {
	benchCollect(b, &hf.Config{ModelType: "llama", HiddenSize: 512, IntermediateSize: 2048, NumHiddenLayers: 2,
		NumAttentionHeads: 8, NumKeyValueHeads: 2, HeadDim: 64, VocabSize: 8192, RMSNormEps: 1e-5,
		RopeTheta: 10000, MaxPositionEmbeddings: 512}, 512, 256)
}

// BenchmarkCollect1BLayer is BenchmarkCollectMid on one decoder layer of
// the Llama-3.2-1B shape (vocabulary cut to 1024), 128 tokens.
func BenchmarkCollect1BLayer(b *testing.B) {
	benchCollect(b, &hf.Config{ModelType: "llama", HiddenSize: 2048, IntermediateSize: 8192, NumHiddenLayers: 1,
		NumAttentionHeads: 32, NumKeyValueHeads: 8, HeadDim: 64, VocabSize: 1024, RMSNormEps: 1e-5,
		RopeTheta: 500000, MaxPositionEmbeddings: 512}, 128, 128)
}

func benchCollect(b *testing.B, cfg *hf.Config, tokens, ctx int) {
	rng := rand.New(rand.NewPCG(1, 2))
	w := mapWeights{}
	mk := func(name string, n int, gain bool, shape ...int64) {
		d := make([]float32, n)
		for i := range d {
			if gain {
				d[i] = 1
			} else {
				d[i] = float32(rng.NormFloat64() * 0.02)
			}
		}
		if shape == nil {
			shape = []int64{int64(n)}
		}
		w[name] = tensor{d, shape}
	}
	h, in, kv, V := cfg.HiddenSize, cfg.IntermediateSize, cfg.NumKeyValueHeads*cfg.HeadDim, cfg.VocabSize
	mk("model.embed_tokens.weight", V*h, false, int64(V), int64(h))
	mk("lm_head.weight", V*h, false, int64(V), int64(h))
	mk("model.norm.weight", h, true)
	for l := range cfg.NumHiddenLayers {
		p := fmt.Sprintf("model.layers.%d.", l)
		mk(p+"input_layernorm.weight", h, true)
		mk(p+"post_attention_layernorm.weight", h, true)
		mk(p+"self_attn.q_proj.weight", h*h, false, int64(h), int64(h))
		mk(p+"self_attn.k_proj.weight", kv*h, false, int64(kv), int64(h))
		mk(p+"self_attn.v_proj.weight", kv*h, false, int64(kv), int64(h))
		mk(p+"self_attn.o_proj.weight", h*h, false, int64(h), int64(h))
		mk(p+"mlp.gate_proj.weight", in*h, false, int64(in), int64(h))
		mk(p+"mlp.up_proj.weight", in*h, false, int64(in), int64(h))
		mk(p+"mlp.down_proj.weight", h*in, false, int64(h), int64(in))
	}
	ref, err := reference.NewWithOptions(cfg, w, reference.Options{Fast: true})
	if err != nil {
		b.Fatal(err)
	}
	ids := make([]int, tokens)
	for i := range ids {
		ids[i] = rng.IntN(V)
	}
	b.ResetTimer()
	for range b.N {
		if _, err := Collect(ref, ids, Options{ContextLength: ctx, Full: func(in int) bool { return in <= 512 }}); err != nil {
			b.Fatal(err)
		}
	}
}
