package arch

import "github.com/anemll/anemll/internal/hf"

// Mistral is MistralForCausalLM: LLaMA with sliding-window attention on
// every layer when sliding_window is set.
var Mistral = &Family{
	Name:          "mistral",
	ModelType:     "mistral",
	Architectures: []string{"MistralForCausalLM"},
	Prefix:        "llama", // ANEMLL's one-shot script converts Mistral as LLaMA

	Activations: []string{"silu"},
	Biases:      Llama.Biases,
	Layer: func(cfg *hf.Config, i int) LayerAttention {
		return LayerAttention{Window: cfg.SlidingWindow, RopeTheta: cfg.RopeTheta, RopeScaling: cfg.RopeScaling}
	},
}
