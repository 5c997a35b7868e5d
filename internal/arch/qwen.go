package arch

import (
	"fmt"

	"github.com/anemll/anemll/internal/hf"
)

// Qwen2 is Qwen2ForCausalLM (Qwen 2 / 2.5 and the DeepSeek-R1 Qwen
// distills): LLaMA with q/k/v biases and none on o_proj, the LM head split
// 16 ways as ANEMLL's qwen2_5 converter does.
var Qwen2 = &Family{
	Name:          "qwen2",
	ModelType:     "qwen2",
	Architectures: []string{"Qwen2ForCausalLM"},
	Prefix:        "qwen25",
	SplitLMHead:   16,
	Activations:   []string{"silu"},
	Biases:        func(cfg *hf.Config) Biases { return Biases{QKV: true} },
	Check: func(cfg *hf.Config) error {
		if cfg.UseSlidingWindow {
			return fmt.Errorf("use_sliding_window: true is not supported for qwen2 (no public Qwen 2.5 checkpoint enables it; set it to false if the model was trained without it): %w", hf.ErrUnsupported)
		}
		return nil
	},
}

// Qwen3 is Qwen3ForCausalLM: LLaMA with an RMSNorm on every query and key
// head (q_norm, k_norm) before RoPE and an explicit head_dim.
var Qwen3 = &Family{
	Name:          "qwen3",
	ModelType:     "qwen3",
	Architectures: []string{"Qwen3ForCausalLM"},
	Prefix:        "qwen",
	SplitLMHead:   16,
	Activations:   []string{"silu"},
	QKNorm:        true,
	Biases: func(cfg *hf.Config) Biases {
		return Biases{QKV: cfg.AttentionBias, O: cfg.AttentionBias}
	},
	Check: func(cfg *hf.Config) error {
		if cfg.UseSlidingWindow {
			return fmt.Errorf("use_sliding_window: true is not supported for qwen3: %w", hf.ErrUnsupported)
		}
		return nil
	},
}
