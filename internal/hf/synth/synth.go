// Package synth writes deterministic random checkpoints of every supported
// model family (LLaMA, Mistral, Qwen 2/3, Gemma 3) in Hugging Face layout (config.json plus safetensors) for tests and benchmarks. Tensors are
// generated chunk by chunk while they are written, so model-sized checkpoints
// need little memory.
package synth

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/anemll/anemll/internal/fp16"
	"github.com/anemll/anemll/internal/hf"
)

// Options describe the checkpoint to generate. Zero values take the defaults
// noted on each field.
type Options struct {
	Hidden, Intermediate, Layers int
	Heads, KVHeads               int // KVHeads defaults to Heads
	HeadDim                      int // 0: hidden/heads, and head_dim is left out of config.json
	Vocab                        int
	TieEmbeddings                bool
	AttentionBias                bool // add q/k/v/o biases (o_proj too, as HF does)
	MLPBias                      bool
	RopeTheta                    float64         // default 10000
	RopeScaling                  *hf.RopeScaling // nil: none
	RMSNormEps                   float64         // default 1e-5
	MaxPositions                 int             // default 2048
	DType                        hf.DType        // BF16 (default), F16 or F32
	Shards                       int             // <= 1: model.safetensors
	Seed                         uint64
	Std                          float64 // weight standard deviation, default 0.02
	// EmbedStd is the standard deviation of the embedding table and LM
	// head (default Std): larger values spread the logits.
	EmbedStd float64

	// Family is the model family: "" or "llama", "mistral", "qwen2"
	// (q/k/v biases), "qwen3" (q/k norms), "gemma3_text" (Gemma 3's norms,
	// GeGLU, windows) or "gemma3" (the same decoder nested in a
	// Gemma3ForConditionalGeneration config and weight layout).
	Family string
	// SlidingWindow sets sliding_window (Mistral, Gemma; 0: null).
	SlidingWindow int
	// SlidingPattern makes layer i global when (i+1)%SlidingPattern == 0
	// (Gemma; written as layer_types and sliding_window_pattern).
	SlidingPattern int
	// QueryPreAttnScalar, AttnSoftcap, FinalSoftcap and RopeLocalBase are
	// Gemma's keys (0: absent or null).
	QueryPreAttnScalar, AttnSoftcap, FinalSoftcap, RopeLocalBase float64
	// NestedPrefix is where a "gemma3" checkpoint keeps the decoder:
	// "language_model.model." (default) or "model.language_model.".
	NestedPrefix string
}

// archOf returns the architectures[0] of a family.
var archOf = map[string]string{
	"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
	"qwen3": "Qwen3ForCausalLM", "gemma3_text": "Gemma3ForCausalLM", "gemma3": "Gemma3ForConditionalGeneration",
}

func (o Options) gemma() bool { return o.Family == "gemma3_text" || o.Family == "gemma3" }

// Llama1B returns the shape of Llama-3.2-1B: tied embeddings, about 2.5 GB
// in BF16.
func Llama1B() Options {
	return Options{TieEmbeddings: true,
		Hidden: 2048, Intermediate: 8192, Layers: 16, Heads: 32, KVHeads: 8, HeadDim: 64,
		Vocab: 128256, RopeTheta: 500000, MaxPositions: 131072, DType: hf.BF16, Std: 0.02,
		RopeScaling: &hf.RopeScaling{RopeType: "llama3", Factor: 32, LowFreqFactor: 1, HighFreqFactor: 4,
			OriginalMaxPositionEmbeddings: 8192},
	}
}

// Llama8B returns the shape of Llama-3.1-8B: untied, 32 layers, 32 query
// heads over 8 KV heads, about 16 GB in BF16.
func Llama8B() Options {
	return Options{
		Hidden: 4096, Intermediate: 14336, Layers: 32, Heads: 32, KVHeads: 8, HeadDim: 128,
		Vocab: 128256, RopeTheta: 500000, MaxPositions: 131072, DType: hf.BF16, Std: 0.02,
		RopeScaling: &hf.RopeScaling{RopeType: "llama3", Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4,
			OriginalMaxPositionEmbeddings: 8192},
	}
}

// Qwen3_06B returns the shape of Qwen3-0.6B: tied embeddings, head_dim 128
// with 16 query heads over a hidden size of 1024, about 1.2 GB in BF16.
func Qwen3_06B() Options {
	return Options{Family: "qwen3", TieEmbeddings: true,
		Hidden: 1024, Intermediate: 3072, Layers: 28, Heads: 16, KVHeads: 8, HeadDim: 128,
		Vocab: 151936, RopeTheta: 1e6, RMSNormEps: 1e-6, MaxPositions: 40960, DType: hf.BF16, Std: 0.02,
	}
}

// Gemma3_1B returns the shape of Gemma-3-1B (Gemma3ForCausalLM): 26 layers,
// one KV head of 256, a window of 512 with every sixth layer global, and a
// 262144-token tied vocabulary, about 2 GB in BF16.
func Gemma3_1B() Options {
	return Options{Family: "gemma3_text", TieEmbeddings: true,
		Hidden: 1152, Intermediate: 6912, Layers: 26, Heads: 4, KVHeads: 1, HeadDim: 256,
		Vocab: 262144, RopeTheta: 1e6, RMSNormEps: 1e-6, MaxPositions: 32768, DType: hf.BF16, Std: 0.02,
		SlidingWindow: 512, SlidingPattern: 6, QueryPreAttnScalar: 256, RopeLocalBase: 10000,
	}
}

func (o Options) withDefaults() Options {
	if o.KVHeads == 0 {
		o.KVHeads = o.Heads
	}
	if o.RopeTheta == 0 {
		o.RopeTheta = 10000
	}
	if o.RMSNormEps == 0 {
		o.RMSNormEps = 1e-5
	}
	if o.MaxPositions == 0 {
		o.MaxPositions = 2048
	}
	if o.DType == hf.DTypeInvalid {
		o.DType = hf.BF16
	}
	if o.Std == 0 {
		o.Std = 0.02
	}
	if o.Family == "" {
		o.Family = "llama"
	}
	if o.Family == "gemma3" && o.NestedPrefix == "" {
		o.NestedPrefix = "language_model.model."
	}
	return o
}

func (o Options) headDim() int {
	if o.HeadDim > 0 {
		return o.HeadDim
	}
	if o.Heads == 0 {
		return 0
	}
	return o.Hidden / o.Heads
}

// ConfigJSON returns the config.json bytes for o.
func ConfigJSON(o Options) ([]byte, error) {
	o = o.withDefaults()
	dtype := map[hf.DType]string{hf.BF16: "bfloat16", hf.F16: "float16", hf.F32: "float32"}[o.DType]
	if dtype == "" {
		return nil, fmt.Errorf("synth: dtype %v is not BF16, F16 or F32", o.DType)
	}
	arch, ok := archOf[o.Family]
	if !ok {
		return nil, fmt.Errorf("synth: unknown family %q", o.Family)
	}
	act := "silu"
	if o.gemma() {
		act = "gelu_pytorch_tanh"
	}
	m := map[string]any{
		"architectures": []string{arch}, "model_type": o.Family,
		"hidden_size": o.Hidden, "intermediate_size": o.Intermediate, "num_hidden_layers": o.Layers,
		"num_attention_heads": o.Heads, "num_key_value_heads": o.KVHeads, "vocab_size": o.Vocab,
		"rms_norm_eps": o.RMSNormEps, "rope_theta": o.RopeTheta, "max_position_embeddings": o.MaxPositions,
		"tie_word_embeddings": o.TieEmbeddings, "attention_bias": o.AttentionBias, "mlp_bias": o.MLPBias,
		"hidden_act": act, "torch_dtype": dtype, "rope_scaling": nil,
		"bos_token_id": min(1, o.Vocab-1), "eos_token_id": min(2, o.Vocab-1),
	}
	if o.HeadDim > 0 {
		m["head_dim"] = o.HeadDim
	}
	if rs := o.RopeScaling; rs != nil {
		r := map[string]any{"rope_type": rs.RopeType, "factor": rs.Factor}
		if rs.RopeType == "llama3" {
			r["low_freq_factor"] = rs.LowFreqFactor
			r["high_freq_factor"] = rs.HighFreqFactor
			r["original_max_position_embeddings"] = rs.OriginalMaxPositionEmbeddings
		}
		m["rope_scaling"] = r
	}
	if o.SlidingWindow > 0 {
		m["sliding_window"] = o.SlidingWindow
	} else if o.Family == "mistral" || o.gemma() {
		m["sliding_window"] = nil
	}
	if o.Family == "qwen2" || o.Family == "qwen3" {
		m["use_sliding_window"] = false
	}
	if o.gemma() {
		types := make([]string, o.Layers)
		for i := range types {
			types[i] = "sliding_attention"
			if o.SlidingPattern > 0 && (i+1)%o.SlidingPattern == 0 {
				types[i] = "full_attention"
			}
		}
		delete(m, "hidden_act")
		m["hidden_activation"] = act
		m["layer_types"] = types
		m["sliding_window_pattern"] = o.SlidingPattern
		m["query_pre_attn_scalar"] = nilIfZero(o.QueryPreAttnScalar)
		m["attn_logit_softcapping"] = nilIfZero(o.AttnSoftcap)
		m["final_logit_softcapping"] = nilIfZero(o.FinalSoftcap)
		m["rope_local_base_freq"] = nilIfZero(o.RopeLocalBase)
		if m["rope_local_base_freq"] == nil {
			m["rope_local_base_freq"] = 10000.0
		}
	}
	if o.Family == "gemma3" {
		m["model_type"] = "gemma3_text"
		delete(m, "architectures")
		m = map[string]any{"architectures": []string{arch}, "model_type": "gemma3", "text_config": m,
			"tie_word_embeddings": o.TieEmbeddings, "torch_dtype": dtype,
			"vision_config": map[string]any{"hidden_size": 16, "model_type": "siglip_vision_model"}}
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("synth: config: %w", err)
	}
	c, err := hf.ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("synth: %w", err)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("synth: options: %w", err)
	}
	return append(b, '\n'), nil
}

func nilIfZero(v float64) any {
	if v == 0 {
		return nil
	}
	return v
}

// kind says how a tensor's values are drawn.
type kind int

const (
	normal kind = iota // Std·N(0,1)
	gamma              // 1 + 0.1·N(0,1), for RMSNorm weights
	gain               // 0.1·N(0,1), for (1 + w) RMSNorm weights (Gemma)
	embed              // EmbedStd·N(0,1), for the embeddings and LM head
)

// Tensors returns the checkpoint's tensors with HF names, as streaming
// WriteTensors. Each tensor's values depend only on Seed and its name.
func Tensors(o Options) []hf.WriteTensor {
	o = o.withDefaults()
	hd := int64(o.headDim())
	h, in, v := int64(o.Hidden), int64(o.Intermediate), int64(o.Vocab)
	q, kv := int64(o.Heads)*hd, int64(o.KVHeads)*hd
	var ts []hf.WriteTensor
	dec, head := "model.", "lm_head."
	if o.Family == "gemma3" {
		dec = o.NestedPrefix
		if dec == "language_model.model." {
			head = "language_model.lm_head."
		}
	}
	norm := gamma
	if o.gemma() {
		norm = gain
	}
	add := func(name string, k kind, shape ...int64) {
		if k == gamma {
			k = norm
		}
		// Values are seeded by the canonical (LLaMA-layout) name, so a
		// nested checkpoint holds the same weights as the flat one.
		key := name
		if rest, ok := strings.CutPrefix(name, dec); ok {
			key = "model." + rest
		} else if rest, ok := strings.CutPrefix(name, head); ok {
			key = "lm_head." + rest
		}
		t := tensor(o, key, k, shape)
		t.Name = name
		ts = append(ts, t)
	}
	add(dec+"embed_tokens.weight", embed, v, h)
	for i := 0; i < o.Layers; i++ {
		p := fmt.Sprintf("%slayers.%d.", dec, i)
		add(p+"input_layernorm.weight", gamma, h)
		add(p+"post_attention_layernorm.weight", gamma, h)
		if o.gemma() {
			add(p+"pre_feedforward_layernorm.weight", gamma, h)
			add(p+"post_feedforward_layernorm.weight", gamma, h)
		}
		add(p+"self_attn.q_proj.weight", normal, q, h)
		add(p+"self_attn.k_proj.weight", normal, kv, h)
		add(p+"self_attn.v_proj.weight", normal, kv, h)
		add(p+"self_attn.o_proj.weight", normal, h, q)
		if o.Family == "qwen3" || o.gemma() {
			add(p+"self_attn.q_norm.weight", gamma, hd)
			add(p+"self_attn.k_norm.weight", gamma, hd)
		}
		if o.AttentionBias || o.Family == "qwen2" {
			add(p+"self_attn.q_proj.bias", normal, q)
			add(p+"self_attn.k_proj.bias", normal, kv)
			add(p+"self_attn.v_proj.bias", normal, kv)
		}
		if o.AttentionBias && o.Family != "qwen2" {
			add(p+"self_attn.o_proj.bias", normal, h)
		}
		add(p+"mlp.gate_proj.weight", normal, in, h)
		add(p+"mlp.up_proj.weight", normal, in, h)
		add(p+"mlp.down_proj.weight", normal, h, in)
		if o.MLPBias {
			add(p+"mlp.gate_proj.bias", normal, in)
			add(p+"mlp.up_proj.bias", normal, in)
			add(p+"mlp.down_proj.bias", normal, h)
		}
	}
	add(dec+"norm.weight", gamma, h)
	if !o.TieEmbeddings {
		add(head+"weight", embed, v, h)
	}
	if o.Family == "gemma3" {
		// A vision tower the text conversion leaves out.
		add("vision_tower.vision_model.post_layernorm.weight", gamma, 16)
	}
	return ts
}

// chunkElems is how many values one PRNG stream produces; chunks are
// generated in parallel and written in order.
const chunkElems = 1 << 18

func tensor(o Options, name string, k kind, shape []int64) hf.WriteTensor {
	hsh := fnv.New64a()
	io.WriteString(hsh, name)
	key := hsh.Sum64()
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	esz := int(o.DType.Size())
	return hf.WriteTensor{Name: name, DType: o.DType, Shape: shape, Data: func(w io.Writer) error {
		chunks := (n + chunkElems - 1) / chunkElems
		par := int64(runtime.GOMAXPROCS(0))
		bufs := make([][]byte, min(par, chunks))
		for first := int64(0); first < chunks; first += par {
			last := min(first+par, chunks)
			var wg sync.WaitGroup
			for c := first; c < last; c++ {
				wg.Add(1)
				go func(c int64) {
					defer wg.Done()
					cnt := min(chunkElems, n-c*chunkElems)
					b := bufs[c-first]
					if cap(b) < int(cnt)*esz {
						b = make([]byte, chunkElems*esz)
					}
					b = b[:int(cnt)*esz]
					fill(b, o, k, rand.New(rand.NewPCG(o.Seed^key, uint64(c))))
					bufs[c-first] = b
				}(c)
			}
			wg.Wait()
			for c := first; c < last; c++ {
				if _, err := w.Write(bufs[c-first]); err != nil {
					return err
				}
			}
		}
		return nil
	}}
}

func fill(b []byte, o Options, k kind, r *rand.Rand) {
	std, mean := o.Std, 0.0
	switch k {
	case gamma:
		std, mean = 0.1, 1
	case gain:
		std = 0.1
	case embed:
		if o.EmbedStd > 0 {
			std = o.EmbedStd
		}
	}
	switch o.DType {
	case hf.F32:
		for i := 0; i+4 <= len(b); i += 4 {
			binary.LittleEndian.PutUint32(b[i:], math.Float32bits(float32(mean+std*r.NormFloat64())))
		}
	case hf.BF16:
		for i := 0; i+2 <= len(b); i += 2 {
			binary.LittleEndian.PutUint16(b[i:], fp16.Float32ToBF16(float32(mean+std*r.NormFloat64())))
		}
	case hf.F16:
		for i := 0; i+2 <= len(b); i += 2 {
			binary.LittleEndian.PutUint16(b[i:], uint16(fp16.FromFloat32(float32(mean+std*r.NormFloat64()))))
		}
	}
}

// Write creates dir (if needed) and writes config.json and the weights:
// model.safetensors, or Shards shard files plus the index. The same Options
// always give byte-identical files.
func Write(dir string, o Options) error {
	o = o.withDefaults()
	cfg, err := ConfigJSON(o)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, hf.ConfigFile), cfg, 0o644); err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	if err := hf.WriteSharded(dir, Tensors(o), o.Shards); err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	return nil
}
