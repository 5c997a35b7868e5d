// Package synth writes deterministic random LLaMA checkpoints in Hugging Face
// layout (config.json plus safetensors) for tests and benchmarks. Tensors are
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
}

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
	m := map[string]any{
		"architectures": []string{"LlamaForCausalLM"}, "model_type": "llama",
		"hidden_size": o.Hidden, "intermediate_size": o.Intermediate, "num_hidden_layers": o.Layers,
		"num_attention_heads": o.Heads, "num_key_value_heads": o.KVHeads, "vocab_size": o.Vocab,
		"rms_norm_eps": o.RMSNormEps, "rope_theta": o.RopeTheta, "max_position_embeddings": o.MaxPositions,
		"tie_word_embeddings": o.TieEmbeddings, "attention_bias": o.AttentionBias, "mlp_bias": o.MLPBias,
		"hidden_act": "silu", "torch_dtype": dtype, "rope_scaling": nil,
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

// kind says how a tensor's values are drawn.
type kind int

const (
	normal kind = iota // Std·N(0,1)
	gamma              // 1 + 0.1·N(0,1), for RMSNorm weights
)

// Tensors returns the checkpoint's tensors with HF names, as streaming
// WriteTensors. Each tensor's values depend only on Seed and its name.
func Tensors(o Options) []hf.WriteTensor {
	o = o.withDefaults()
	hd := int64(o.headDim())
	h, in, v := int64(o.Hidden), int64(o.Intermediate), int64(o.Vocab)
	q, kv := int64(o.Heads)*hd, int64(o.KVHeads)*hd
	var ts []hf.WriteTensor
	add := func(name string, k kind, shape ...int64) {
		ts = append(ts, tensor(o, name, k, shape))
	}
	add("model.embed_tokens.weight", normal, v, h)
	for i := 0; i < o.Layers; i++ {
		p := fmt.Sprintf("model.layers.%d.", i)
		add(p+"input_layernorm.weight", gamma, h)
		add(p+"post_attention_layernorm.weight", gamma, h)
		add(p+"self_attn.q_proj.weight", normal, q, h)
		add(p+"self_attn.k_proj.weight", normal, kv, h)
		add(p+"self_attn.v_proj.weight", normal, kv, h)
		add(p+"self_attn.o_proj.weight", normal, h, q)
		if o.AttentionBias {
			add(p+"self_attn.q_proj.bias", normal, q)
			add(p+"self_attn.k_proj.bias", normal, kv)
			add(p+"self_attn.v_proj.bias", normal, kv)
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
	add("model.norm.weight", gamma, h)
	if !o.TieEmbeddings {
		add("lm_head.weight", normal, v, h)
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
	if k == gamma {
		std, mean = 0.1, 1
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
