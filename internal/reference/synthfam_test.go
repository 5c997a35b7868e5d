package reference_test

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/anemll/anemll/internal/fp16"
	"github.com/anemll/anemll/internal/hf"
	"github.com/anemll/anemll/internal/reference"
)

// tinyShape is the size of the checkpoints built in these tests.
type tinyShape struct {
	hidden, inter, layers, heads, kv, hd, vocab int
}

var tinyDims = tinyShape{hidden: 32, inter: 48, layers: 3, heads: 4, kv: 2, hd: 12, vocab: 90}

// tinyTensors lists a decoder's tensors: name → shape, with which tensors
// exist decided by the flags.
type tensorSet struct {
	prefix, headName                             string
	qkvBias, oBias, mlpBias, qkNorm, gemma, tied bool
}

func (ts tensorSet) shapes(d tinyShape) map[string][]int64 {
	H, Q, KV, I := int64(d.hidden), int64(d.heads*d.hd), int64(d.kv*d.hd), int64(d.inter)
	out := map[string][]int64{
		ts.prefix + "embed_tokens.weight": {int64(d.vocab), H},
		ts.prefix + "norm.weight":         {H},
	}
	if !ts.tied {
		out[ts.headName] = []int64{int64(d.vocab), H}
	}
	for l := range d.layers {
		p := fmt.Sprintf("%slayers.%d.", ts.prefix, l)
		lin := func(name string, o, i int64, bias bool) {
			out[p+name+".weight"] = []int64{o, i}
			if bias {
				out[p+name+".bias"] = []int64{o}
			}
		}
		lin("self_attn.q_proj", Q, H, ts.qkvBias)
		lin("self_attn.k_proj", KV, H, ts.qkvBias)
		lin("self_attn.v_proj", KV, H, ts.qkvBias)
		lin("self_attn.o_proj", H, Q, ts.oBias)
		lin("mlp.gate_proj", I, H, ts.mlpBias)
		lin("mlp.up_proj", I, H, ts.mlpBias)
		lin("mlp.down_proj", H, I, ts.mlpBias)
		out[p+"input_layernorm.weight"] = []int64{H}
		out[p+"post_attention_layernorm.weight"] = []int64{H}
		if ts.gemma {
			out[p+"pre_feedforward_layernorm.weight"] = []int64{H}
			out[p+"post_feedforward_layernorm.weight"] = []int64{H}
		}
		if ts.qkNorm {
			out[p+"self_attn.q_norm.weight"] = []int64{int64(d.hd)}
			out[p+"self_attn.k_norm.weight"] = []int64{int64(d.hd)}
		}
	}
	return out
}

// randomTensors draws every tensor from a seeded generator: norm gains
// around 1 (plain) or around 0 (Gemma's 1+w), projections N(0, 0.2²).
func randomTensors(shapes map[string][]int64, gemma bool, seed uint64) map[string][]float32 {
	names := make([]string, 0, len(shapes))
	for n := range shapes {
		names = append(names, n)
	}
	slices.Sort(names)
	r := rand.New(rand.NewPCG(seed, 7))
	out := map[string][]float32{}
	for _, n := range names {
		size := int64(1)
		for _, d := range shapes[n] {
			size *= d
		}
		v := make([]float32, size)
		isNorm := len(shapes[n]) == 1 && !slices.Contains([]string{".bias"}, n[len(n)-5:])
		for i := range v {
			switch {
			case isNorm && gemma:
				v[i] = float32(0.3 * r.NormFloat64())
			case isNorm:
				v[i] = float32(1 + 0.2*r.NormFloat64())
			default:
				v[i] = float32(0.2 * r.NormFloat64())
			}
		}
		out[n] = v
	}
	return out
}

// writeCheckpoint writes config.json and an F32 model.safetensors to a new
// temporary directory.
func writeCheckpoint(t testing.TB, cfg map[string]any, tensors map[string][]float32, shapes map[string][]int64) string {
	t.Helper()
	dir := t.TempDir()
	b, err := json.MarshalIndent(cfg, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, hf.ConfigFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
	var wt []hf.WriteTensor
	for n, v := range tensors {
		raw := make([]byte, 4*len(v))
		for i, f := range v {
			binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(f))
		}
		wt = append(wt, hf.BytesTensor(n, hf.F32, shapes[n], raw))
	}
	if err := hf.WriteSafetensors(filepath.Join(dir, hf.SingleFile), wt); err != nil {
		t.Fatal(err)
	}
	return dir
}

// familyCase is one synthetic model: its config, tensors and the test's own
// description of what Hugging Face computes for it.
type familyCase struct {
	name    string
	cfg     map[string]any
	tensors tensorSet
	naive   func(cfg *hf.Config) naiveSpec
}

func baseConfig(modelType, arch string, d tinyShape) map[string]any {
	return map[string]any{
		"model_type": modelType, "architectures": []string{arch},
		"hidden_size": d.hidden, "intermediate_size": d.inter, "num_hidden_layers": d.layers,
		"num_attention_heads": d.heads, "num_key_value_heads": d.kv, "head_dim": d.hd,
		"vocab_size": d.vocab, "rms_norm_eps": 1e-6, "rope_theta": 100.0, "max_position_embeddings": 256,
		"tie_word_embeddings": false, "torch_dtype": "float32",
	}
}

func with(m map[string]any, kv ...any) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		out[kv[i].(string)] = kv[i+1]
	}
	return out
}

// uniformNaive: every layer the same window and the config's RoPE.
func uniformNaive(s naiveSpec, cfg *hf.Config, window int) naiveSpec {
	div := 1.0
	if rs := cfg.RopeScaling; rs != nil && rs.RopeType == "linear" {
		div = rs.Factor
	}
	s.window, s.theta, s.posDiv = nil, nil, nil
	for range cfg.NumHiddenLayers {
		s.window = append(s.window, window)
		s.theta = append(s.theta, cfg.RopeTheta)
		s.posDiv = append(s.posDiv, div)
	}
	s.scale = 1 / math.Sqrt(float64(cfg.HeadDim))
	s.tied = cfg.TieWordEmbeddings
	return s
}

// gemmaNaive: layers chosen by layer_types (given in these tests), local
// base without scaling on sliding layers, embeddings × sqrt(H) rounded to
// the dtype.
func gemmaNaive(prefix string) func(cfg *hf.Config) naiveSpec {
	return func(cfg *hf.Config) naiveSpec {
		s := naiveSpec{prefix: prefix, headName: "lm_head.weight", qkvBias: cfg.AttentionBias, oBias: cfg.AttentionBias,
			qkNorm: true, gemma: true, gelu: true, scale: 1 / math.Sqrt(cfg.QueryPreAttnScalar),
			attnCap: cfg.AttnLogitSoftcapping, finalCap: cfg.FinalLogitSoftcapping, tied: true}
		for _, lt := range cfg.LayerTypes {
			if lt == "sliding_attention" {
				s.window = append(s.window, cfg.SlidingWindow)
				s.theta = append(s.theta, cfg.RopeLocalBaseFreq)
				s.posDiv = append(s.posDiv, 1)
			} else {
				div := 1.0
				if cfg.RopeScaling != nil {
					div = cfg.RopeScaling.Factor
				}
				s.window = append(s.window, 0)
				s.theta = append(s.theta, cfg.RopeTheta)
				s.posDiv = append(s.posDiv, div)
			}
		}
		sq := float32(math.Sqrt(float64(cfg.HiddenSize)))
		switch cfg.TorchDtype {
		case "bfloat16":
			s.embedScale = float64(fp16.BF16ToFloat32(fp16.Float32ToBF16(sq)))
		case "float16":
			s.embedScale = float64(fp16.Round(sq))
		default:
			s.embedScale = float64(sq)
		}
		return s
	}
}

func gemmaConfig(d tinyShape) map[string]any {
	return with(baseConfig("gemma3_text", "Gemma3ForCausalLM", d),
		"hidden_activation", "gelu_pytorch_tanh", "tie_word_embeddings", true, "torch_dtype", "bfloat16",
		"layer_types", []string{"sliding_attention", "full_attention", "sliding_attention"},
		"sliding_window", 3, "query_pre_attn_scalar", 10, "rope_local_base_freq", 50.0, "rope_theta", 1000.0,
		"rope_scaling", map[string]any{"rope_type": "linear", "factor": 2.0},
		"attn_logit_softcapping", 4.0, "final_logit_softcapping", 6.0)
}

func familyCases() []familyCase {
	d := tinyDims
	plain := tensorSet{prefix: "model.", headName: "lm_head.weight"}
	llama := func(c *hf.Config) naiveSpec { return llamaNaive(c) }
	qkv := plain
	qkv.qkvBias = true
	all := plain
	all.qkvBias, all.oBias, all.mlpBias = true, true, true
	q3 := plain
	q3.qkNorm = true
	q3b := q3
	q3b.qkvBias, q3b.oBias, q3b.tied = true, true, true
	gem := tensorSet{prefix: "model.", gemma: true, qkNorm: true, tied: true}
	return []familyCase{
		{"llama biases", with(baseConfig("llama", "LlamaForCausalLM", d), "attention_bias", true, "mlp_bias", true), all, llama},
		{"mistral window 4", with(baseConfig("mistral", "MistralForCausalLM", d), "sliding_window", 4), plain,
			func(c *hf.Config) naiveSpec {
				return uniformNaive(naiveSpec{prefix: "model.", headName: "lm_head.weight"}, c, 4)
			}},
		{"qwen2 tied", with(baseConfig("qwen2", "Qwen2ForCausalLM", d), "tie_word_embeddings", true,
			"use_sliding_window", false, "sliding_window", 4, "max_window_layers", 1), withTied(qkv),
			func(c *hf.Config) naiveSpec {
				return uniformNaive(naiveSpec{prefix: "model.", headName: "lm_head.weight", qkvBias: true}, c, 0)
			}},
		{"qwen3 head_dim 12", baseConfig("qwen3", "Qwen3ForCausalLM", d), q3,
			func(c *hf.Config) naiveSpec {
				return uniformNaive(naiveSpec{prefix: "model.", headName: "lm_head.weight", qkNorm: true}, c, 0)
			}},
		{"qwen3 attention_bias tied", with(baseConfig("qwen3", "Qwen3ForCausalLM", d), "attention_bias", true,
			"tie_word_embeddings", true), q3b,
			func(c *hf.Config) naiveSpec {
				return uniformNaive(naiveSpec{prefix: "model.", headName: "lm_head.weight", qkNorm: true,
					qkvBias: true, oBias: true}, c, 0)
			}},
		{"gemma3_text caps and linear rope", gemmaConfig(d), gem, gemmaNaive("model.")},
		{"gemma3_text float16 no caps", with(gemmaConfig(d), "torch_dtype", "float16", "attn_logit_softcapping", nil,
			"final_logit_softcapping", nil, "rope_scaling", nil), gem, gemmaNaive("model.")},
	}
}

func withTied(ts tensorSet) tensorSet { ts.tied = true; return ts }

// ids for the synthetic models: 13 tokens, several windows deep.
var synthIDs = []int{3, 41, 59, 26, 5, 35, 89, 7, 9, 0, 88, 17, 41}

func buildCase(t testing.TB, fc familyCase, seed uint64) (dir string, tensors map[string][]float32) {
	shapes := fc.tensors.shapes(tinyDims)
	tensors = randomTensors(shapes, fc.tensors.gemma, seed)
	return writeCheckpoint(t, fc.cfg, tensors, shapes), tensors
}

func maxDiff(got [][]float32, want [][]float64) (worst, scale float64) {
	for p := range want {
		for v := range want[p] {
			worst = max(worst, math.Abs(float64(got[p][v])-want[p][v]))
			scale = max(scale, math.Abs(want[p][v]))
		}
	}
	return worst, scale
}

// TestFamiliesAgainstNaive checks every family against the literal float64
// transcription (relative tolerance 1e-5 of the largest logit), Step
// against Forward (bit for bit: they share the layer routine) and the lazy
// mode against the eager one (bit for bit), at positions past the window.
func TestFamiliesAgainstNaive(t *testing.T) {
	for i, fc := range familyCases() {
		t.Run(fc.name, func(t *testing.T) {
			dir, tensors := buildCase(t, fc, uint64(100+i))
			m := openModel(t, dir, reference.Options{})
			cfg := m.Config()
			got, err := m.Forward(synthIDs)
			if err != nil {
				t.Fatal(err)
			}
			want := naiveForward(cfg, fc.naive(cfg), func(n string) []float32 {
				v, ok := tensors[n]
				if !ok {
					t.Fatalf("naive: no tensor %q", n)
				}
				return v
			}, synthIDs)
			worst, scale := maxDiff(got, want)
			t.Logf("max |Δ| = %.3g, max |logit| = %.3g", worst, scale)
			if worst > 1e-5*max(1, scale) {
				t.Errorf("reference differs from the naive loop by %g (logits up to %g)", worst, scale)
			}
			checkStepAndLazy(t, m, dir, got)
		})
	}
}

// checkStepAndLazy asserts that Session.Step reproduces Forward's rows and
// that a lazy model reproduces both, bit for bit.
func checkStepAndLazy(t *testing.T, m *reference.Model, dir string, full [][]float32) {
	t.Helper()
	lazy := openModel(t, dir, reference.Options{Lazy: true})
	lfull, err := lazy.Forward(synthIDs)
	if err != nil {
		t.Fatal(err)
	}
	for _, mm := range []*reference.Model{m, lazy} {
		s := mm.NewSession()
		for p, id := range synthIDs {
			row, err := s.Step(id)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(row, full[p]) {
				t.Fatalf("Step at position %d differs from Forward", p)
			}
			if !slices.Equal(lfull[p], full[p]) {
				t.Fatalf("lazy Forward at position %d differs from eager", p)
			}
		}
	}
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
