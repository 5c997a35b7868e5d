package arch

import "github.com/anemll/anemll/internal/hf"

// Llama is LlamaForCausalLM: the decoder every other family varies.
var Llama = &Family{
	Name:          "llama",
	ModelType:     "llama",
	Architectures: []string{"LlamaForCausalLM"},
	Prefix:        "llama",
	Activations:   []string{"silu"},
	Biases: func(cfg *hf.Config) Biases {
		return Biases{QKV: cfg.AttentionBias, O: cfg.AttentionBias, MLP: cfg.MLPBias}
	},
}
