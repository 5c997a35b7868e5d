package arch

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/anemll/anemll/internal/fp16"
	"github.com/anemll/anemll/internal/hf"
)

// Family describes how one Hugging Face model family maps onto ANEMLL's
// parts and the shared decoder graph (internal/arch/decoder): which
// tensors it has, its norms, biases, activation, attention scale and
// windows, its LM-head split and file prefix. A family is plain data plus
// a few functions of the configuration; Families lists every one.
type Family struct {
	// Name is the family's name in messages and in meta.yaml's
	// architecture when the model_type is ambiguous.
	Name string
	// ModelType is config.json's model_type; Architectures the accepted
	// architectures[0] values (an absent list is accepted).
	ModelType     string
	Architectures []string
	// Prefix is ANEMLL's default file-name prefix for the family.
	Prefix string
	// SplitLMHead is ANEMLL's LM-head split for the family; 0 chooses one
	// from the vocabulary size.
	SplitLMHead int
	// Activations are the accepted hidden_act values, the first being the
	// default when config.json gives none.
	Activations []string
	// QKNorm applies an RMSNorm (q_norm, k_norm) to each query and key head
	// over head_dim before RoPE.
	QKNorm bool
	// Sandwich norms (Gemma): post_attention_layernorm normalises the
	// attention output before the residual add, and pre_feedforward /
	// post_feedforward layernorms wrap the MLP.
	SandwichNorms bool
	// NormPlusOne makes every RMSNorm gain 1 + w (Gemma) instead of w.
	NormPlusOne bool
	// ScaleEmbeddings multiplies the embeddings by sqrt(hidden_size),
	// rounded to the checkpoint's dtype first (Gemma).
	ScaleEmbeddings bool
	// Biases reports which linear layers carry biases.
	Biases func(cfg *hf.Config) Biases
	// Layer gives layer i's attention window and RoPE; nil means full
	// causal attention with the config's rope_theta and rope_scaling.
	Layer func(cfg *hf.Config, i int) LayerAttention
	// AttnScale is the attention score scale; nil means head_dim^-0.5.
	AttnScale func(cfg *hf.Config) float64
	// Check refuses configurations of the family that cannot be converted
	// (nil: none beyond hf.Config.Validate).
	Check func(cfg *hf.Config) error
	// WeightPrefixes are the places the decoder's tensors may live in a
	// checkpoint, tried in order; the decoder's canonical names start with
	// "model." and the LM head is "lm_head.weight". Empty means "model.".
	WeightPrefixes []WeightPrefix
	// FP16Risk marks families whose residual stream is known to exceed
	// fp16's range (Gemma 3): the pipeline's --fp16-scale auto measures it.
	FP16Risk bool
	// Skipped are checkpoint tensor-name prefixes the conversion leaves
	// out on purpose (a vision tower), with what to tell the user.
	Skipped []string
}

// WeightPrefix says where one checkpoint layout keeps the decoder
// ("model." → Decoder) and the LM head ("lm_head." → Head).
type WeightPrefix struct{ Decoder, Head string }

// Biases says which linear layers carry a bias.
type Biases struct {
	QKV bool // q_proj, k_proj, v_proj
	O   bool // o_proj
	MLP bool // gate_proj, up_proj, down_proj
}

// LayerAttention is one decoder layer's attention window and RoPE.
type LayerAttention struct {
	// Window, when positive, lets a query at position i see keys j with
	// i − j < Window (sliding-window attention); 0 is full causal.
	Window int
	// RopeTheta and RopeScaling are the layer's rotary base and scaling.
	RopeTheta   float64
	RopeScaling *hf.RopeScaling
}

// Families is the table of supported model families, keyed by
// config.json's model_type. A new family is one file and one row here.
var Families = []*Family{Llama, Mistral, Qwen2, Qwen3, Gemma3Text, Gemma3}

// Lookup finds cfg's family by model_type and architectures[0] and runs
// its checks. Errors name config.json and the supported values.
func Lookup(cfg *hf.Config) (*Family, error) {
	file := cfg.Source
	if file == "" {
		file = hf.ConfigFile
	}
	var f *Family
	var types []string
	for _, fam := range Families {
		types = append(types, fam.ModelType)
		if fam.ModelType == cfg.ModelType {
			f = fam
		}
	}
	if f == nil {
		return nil, fmt.Errorf("arch: %s: model_type %q is not supported (supported: %s): %w",
			file, cfg.ModelType, strings.Join(types, ", "), hf.ErrUnsupported)
	}
	if len(cfg.Architectures) > 0 && !slices.Contains(f.Architectures, cfg.Architectures[0]) {
		return nil, fmt.Errorf("arch: %s: architectures[0] %q is not supported for model_type %q (supported: %s): %w",
			file, cfg.Architectures[0], cfg.ModelType, strings.Join(f.Architectures, ", "), hf.ErrUnsupported)
	}
	if act := cfg.HiddenAct; act != "" && !slices.Contains(f.Activations, act) {
		return nil, fmt.Errorf("arch: %s: hidden_act %q is not supported for %s (supported: %s): %w",
			file, act, f.Name, strings.Join(f.Activations, ", "), hf.ErrUnsupported)
	}
	if f.Check != nil {
		if err := f.Check(cfg); err != nil {
			return nil, fmt.Errorf("arch: %s: %w", file, err)
		}
	}
	return f, nil
}

// Spec is a family applied to one configuration: everything the decoder
// graph needs, as plain data.
type Spec struct {
	Family *Family
	Biases Biases
	// Activation is the MLP gate activation ("silu" or
	// "gelu_pytorch_tanh").
	Activation string
	// AttnScale multiplies attention scores.
	AttnScale float64
	// Layers holds each layer's window and RoPE.
	Layers []LayerAttention
	// EmbedScale multiplies the embeddings (0: no scaling).
	EmbedScale float64
	// AttnSoftcap and FinalSoftcap are tanh soft caps of the attention
	// scores and the logits (0: none).
	AttnSoftcap, FinalSoftcap float64
}

// Resolve looks cfg's family up and applies it to cfg.
func Resolve(cfg *hf.Config) (*Spec, error) {
	f, err := Lookup(cfg)
	if err != nil {
		return nil, err
	}
	s := &Spec{Family: f, Activation: f.Activations[0], AttnScale: 1 / math.Sqrt(float64(cfg.HeadDim)),
		AttnSoftcap: cfg.AttnLogitSoftcapping, FinalSoftcap: cfg.FinalLogitSoftcapping}
	if cfg.HiddenAct != "" {
		s.Activation = cfg.HiddenAct
	}
	if f.Biases != nil {
		s.Biases = f.Biases(cfg)
	}
	if f.AttnScale != nil {
		s.AttnScale = f.AttnScale(cfg)
	}
	for i := 0; i < cfg.NumHiddenLayers; i++ {
		la := LayerAttention{RopeTheta: cfg.RopeTheta, RopeScaling: cfg.RopeScaling}
		if f.Layer != nil {
			la = f.Layer(cfg, i)
		}
		s.Layers = append(s.Layers, la)
	}
	if f.ScaleEmbeddings {
		s.EmbedScale = roundToDtype(math.Sqrt(float64(cfg.HiddenSize)), cfg.TorchDtype)
	}
	return s, nil
}

// roundToDtype rounds x as a tensor of the checkpoint's dtype would hold
// it (Hugging Face builds Gemma's embedding normaliser in that dtype).
func roundToDtype(x float64, dtype string) float64 {
	switch dtype {
	case "bfloat16":
		return float64(fp16.BF16ToFloat32(fp16.Float32ToBF16(float32(x))))
	case "float16":
		return float64(fp16.ToFloat32(fp16.FromFloat64(x)))
	}
	return float64(float32(x))
}
