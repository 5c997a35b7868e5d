package arch

import (
	"fmt"
	"math"

	"github.com/anemll/anemll/internal/hf"
)

// Gemma3Text is Gemma3ForCausalLM (Gemma 3 270M and 1B): (1 + w) RMSNorm
// gains, sandwich norms around attention and MLP, q/k norms, embeddings
// scaled by sqrt(hidden), GeGLU MLP, query_pre_attn_scalar attention
// scale, and sliding-window layers with their own RoPE base.
var Gemma3Text = &Family{
	Name:            "gemma3",
	ModelType:       "gemma3_text",
	Architectures:   []string{"Gemma3ForCausalLM"},
	Prefix:          "gemma3",
	SplitLMHead:     16,
	Activations:     []string{"gelu_pytorch_tanh"},
	QKNorm:          true,
	SandwichNorms:   true,
	NormPlusOne:     true,
	ScaleEmbeddings: true,
	FP16Risk:        true,
	Biases: func(cfg *hf.Config) Biases {
		return Biases{QKV: cfg.AttentionBias, O: cfg.AttentionBias}
	},
	Layer:     gemma3Layer,
	AttnScale: func(cfg *hf.Config) float64 { return 1 / math.Sqrt(gemma3QueryScalar(cfg)) },
	Check:     gemma3Check,
}

// Gemma3 is the text tower of Gemma3ForConditionalGeneration (Gemma 3 4B,
// 12B, 27B): the decoder's configuration is text_config and its weights sit
// under language_model (the layout depends on the transformers version that
// saved them); the vision tower is left out.
var Gemma3 = &Family{
	Name:            "gemma3",
	ModelType:       "gemma3",
	Architectures:   []string{"Gemma3ForConditionalGeneration"},
	Prefix:          "gemma3",
	SplitLMHead:     16,
	Activations:     Gemma3Text.Activations,
	QKNorm:          true,
	SandwichNorms:   true,
	NormPlusOne:     true,
	ScaleEmbeddings: true,
	FP16Risk:        true,
	Biases:          Gemma3Text.Biases,
	Layer:           gemma3Layer,
	AttnScale:       Gemma3Text.AttnScale,
	Check: func(cfg *hf.Config) error {
		if !cfg.Nested || cfg.TextModelType != "gemma3_text" {
			return fmt.Errorf("model_type gemma3 needs a text_config of model_type gemma3_text (got %q): %w", cfg.TextModelType, hf.ErrUnsupported)
		}
		return gemma3Check(cfg)
	},
	WeightPrefixes: []WeightPrefix{
		{Decoder: "language_model.model.", Head: "language_model.lm_head."},
		{Decoder: "model.language_model.", Head: "lm_head."},
	},
	Skipped: []string{"vision_tower.", "multi_modal_projector.", "model.vision_tower.", "model.multi_modal_projector."},
}

// Gemma3TextConfig's defaults for keys a config.json leaves out.
const (
	gemma3DefaultQueryScalar = 256
	gemma3DefaultPattern     = 6
	gemma3DefaultLocalBase   = 10000
)

func gemma3QueryScalar(cfg *hf.Config) float64 {
	if cfg.QueryPreAttnScalar > 0 {
		return cfg.QueryPreAttnScalar
	}
	return gemma3DefaultQueryScalar
}

// gemma3Sliding reports whether layer i uses the sliding window: from
// layer_types, else from sliding_window_pattern (layer i is global when
// i+1 is a multiple of it).
func gemma3Sliding(cfg *hf.Config, i int) bool {
	if cfg.LayerTypes != nil {
		return cfg.LayerTypes[i] == "sliding_attention"
	}
	p := cfg.SlidingWindowPattern
	if p == 0 {
		p = gemma3DefaultPattern
	}
	return (i+1)%p != 0
}

func gemma3Layer(cfg *hf.Config, i int) LayerAttention {
	if gemma3Sliding(cfg, i) {
		base := cfg.RopeLocalBaseFreq
		if base == 0 {
			base = gemma3DefaultLocalBase
		}
		return LayerAttention{Window: cfg.SlidingWindow, RopeTheta: base}
	}
	return LayerAttention{RopeTheta: cfg.RopeTheta, RopeScaling: cfg.RopeScaling}
}

func gemma3Check(cfg *hf.Config) error {
	for i := 0; i < cfg.NumHiddenLayers; i++ {
		if gemma3Sliding(cfg, i) && cfg.SlidingWindow <= 0 {
			return fmt.Errorf("gemma3: layer %d uses sliding_attention but sliding_window is null or absent; set it in config.json", i)
		}
	}
	return nil
}
