package hf_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/anemll/anemll/internal/hf"
)

const tinyDir = "../../testdata/tiny-llama-fortunes"

func TestLoadConfigTiny(t *testing.T) {
	for _, sub := range []string{"bf16", "f32"} {
		t.Run(sub, func(t *testing.T) {
			c, err := hf.LoadConfig(filepath.Join(tinyDir, sub))
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			bos, pad := 1016, 1018
			dtype := map[string]string{"bf16": "bfloat16", "f32": "float32"}[sub]
			want := &hf.Config{
				Architectures: []string{"LlamaForCausalLM"}, ModelType: "llama",
				HiddenSize: 128, IntermediateSize: 384, NumHiddenLayers: 4, NumAttentionHeads: 4,
				NumKeyValueHeads: 2, HeadDim: 32, VocabSize: 1024, RMSNormEps: 1e-5, RopeTheta: 10000,
				MaxPositionEmbeddings: 512, HiddenAct: "silu", BOSTokenID: &bos, EOSTokenIDs: []int{1017},
				PadTokenID: &pad, TorchDtype: dtype, HeadDimExplicit: true,
				Source: filepath.Join(tinyDir, sub, "config.json"),
			}
			if !reflect.DeepEqual(c, want) {
				t.Errorf("got  %+v\nwant %+v", c, want)
			}
			if c.KVGroups() != 2 {
				t.Errorf("KVGroups = %d, want 2", c.KVGroups())
			}
		})
	}
}

// base is a valid Llama-3.2-1B-like config; tests patch keys into it.
func base() map[string]any {
	return map[string]any{
		"architectures": []any{"LlamaForCausalLM"}, "model_type": "llama",
		"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
		"num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
		"rms_norm_eps": 1e-5, "rope_theta": 500000.0, "max_position_embeddings": 131072,
		"tie_word_embeddings": true, "hidden_act": "silu", "bos_token_id": 128000,
		"eos_token_id": []any{128001, 128008, 128009}, "torch_dtype": "bfloat16",
		"rope_scaling": map[string]any{"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
			"high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
	}
}

func parse(t *testing.T, m map[string]any) *hf.Config {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	c, err := hf.ParseConfig(b)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestParseConfigVariants(t *testing.T) {
	c := parse(t, base())
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.HeadDim != 64 || c.HeadDimExplicit || c.NumKeyValueHeads != 8 || !c.TieWordEmbeddings ||
		!reflect.DeepEqual(c.EOSTokenIDs, []int{128001, 128008, 128009}) || c.RopeTheta != 500000 {
		t.Errorf("llama3.2 config parsed wrong: %+v", c)
	}
	wantRS := hf.RopeScaling{RopeType: "llama3", Factor: 32, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPositionEmbeddings: 8192}
	if c.RopeScaling == nil || *c.RopeScaling != wantRS {
		t.Errorf("rope_scaling = %+v, want %+v", c.RopeScaling, wantRS)
	}

	// Defaults when keys are absent.
	m := base()
	for _, k := range []string{"num_key_value_heads", "rope_theta", "rms_norm_eps", "hidden_act", "rope_scaling",
		"max_position_embeddings", "tie_word_embeddings", "eos_token_id"} {
		delete(m, k)
	}
	c = parse(t, m)
	if c.NumKeyValueHeads != 32 || c.RopeTheta != 10000 || c.RMSNormEps != 1e-6 || c.HiddenAct != "" ||
		c.RopeScaling != nil || c.MaxPositionEmbeddings != 2048 || c.TieWordEmbeddings || c.EOSTokenIDs != nil {
		t.Errorf("defaults wrong: %+v", c)
	}

	// Newer transformers: rope_parameters carries rope_theta and the type.
	m = base()
	delete(m, "rope_theta")
	delete(m, "rope_scaling")
	m["rope_parameters"] = map[string]any{"rope_type": "llama3", "rope_theta": 250000.0, "factor": 8.0,
		"low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
	m["dtype"] = "float16"
	delete(m, "torch_dtype")
	m["eos_token_id"] = 7
	m["state_length"] = 512
	c = parse(t, m)
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.RopeTheta != 250000 || c.RopeScaling == nil || c.RopeScaling.Factor != 8 || c.TorchDtype != "float16" ||
		!reflect.DeepEqual(c.EOSTokenIDs, []int{7}) || c.StateLength != 512 {
		t.Errorf("rope_parameters config parsed wrong: %+v %+v", c, c.RopeScaling)
	}

	// Default rope type in rope_parameters means no scaling; old "type" key works.
	m = base()
	m["rope_scaling"] = nil
	m["rope_parameters"] = map[string]any{"rope_type": "default", "rope_theta": 1e6}
	c = parse(t, m)
	if c.RopeScaling != nil || c.RopeTheta != 1e6 {
		t.Errorf("default rope_parameters: %+v theta %g", c.RopeScaling, c.RopeTheta)
	}
	m = base()
	m["rope_scaling"] = map[string]any{"type": "linear", "factor": 2.0}
	c = parse(t, m)
	if err := c.Validate(); err != nil || c.RopeScaling == nil || c.RopeScaling.RopeType != "linear" || c.RopeScaling.Factor != 2 {
		t.Errorf("linear: %+v %v", c.RopeScaling, err)
	}
}

// TestParseConfigFamilyKeys reads the keys only some families use, and a
// multimodal config's text_config.
func TestParseConfigFamilyKeys(t *testing.T) {
	gemma := map[string]any{
		"model_type": "gemma3_text", "architectures": []any{"Gemma3ForCausalLM"},
		"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
		"num_key_value_heads": 2, "head_dim": 32, "vocab_size": 512, "hidden_activation": "gelu_pytorch_tanh",
		"sliding_window": 8, "_sliding_window_pattern": 6, "layer_types": []any{"sliding_attention", "full_attention"},
		"query_pre_attn_scalar": 32, "attn_logit_softcapping": nil, "final_logit_softcapping": 30.0,
		"rope_local_base_freq": 10000.0, "rope_theta": 1e6, "tie_word_embeddings": true,
	}
	c := parse(t, gemma)
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.HiddenAct != "gelu_pytorch_tanh" || c.SlidingWindow != 8 || c.SlidingWindowPattern != 6 ||
		!reflect.DeepEqual(c.LayerTypes, []string{"sliding_attention", "full_attention"}) ||
		c.QueryPreAttnScalar != 32 || c.AttnLogitSoftcapping != 0 || c.FinalLogitSoftcapping != 30 ||
		c.RopeLocalBaseFreq != 10000 || c.Nested {
		t.Errorf("gemma3_text keys parsed wrong: %+v", c)
	}

	// The same decoder nested as Gemma3ForConditionalGeneration writes it:
	// the outer block names the model and carries tie_word_embeddings.
	inner := map[string]any{}
	for k, v := range gemma {
		if k != "architectures" && k != "tie_word_embeddings" {
			inner[k] = v
		}
	}
	outer := map[string]any{"model_type": "gemma3", "architectures": []any{"Gemma3ForConditionalGeneration"},
		"tie_word_embeddings": true, "text_config": inner, "vision_config": map[string]any{"hidden_size": 1152}}
	n := parse(t, outer)
	if !n.Nested || n.ModelType != "gemma3" || n.TextModelType != "gemma3_text" ||
		!reflect.DeepEqual(n.Architectures, []string{"Gemma3ForConditionalGeneration"}) || !n.TieWordEmbeddings {
		t.Errorf("nested config: %+v", n)
	}
	n.Nested, n.ModelType, n.TextModelType, n.Architectures = false, c.ModelType, "", c.Architectures
	if !reflect.DeepEqual(n, c) {
		t.Errorf("nested decoder differs from the flat one:\n%+v\n%+v", n, c)
	}

	q := parse(t, map[string]any{"model_type": "qwen2", "hidden_size": 64, "num_attention_heads": 4,
		"use_sliding_window": true, "sliding_window": 4096, "max_window_layers": 21})
	if !q.UseSlidingWindow || q.SlidingWindow != 4096 || q.MaxWindowLayers != 21 {
		t.Errorf("qwen2 window keys: %+v", q)
	}
}

func TestParseConfigMalformed(t *testing.T) {
	for _, s := range []string{`{`, `[]`, `{"hidden_size":"big"}`, `{"eos_token_id":"x"}`, `{"rope_scaling":5}`,
		`{"final_logit_softcapping":"thirty"}`, `{"text_config":{"text_config":{}}}`, `{"text_config":5}`} {
		if _, err := hf.ParseConfig([]byte(s)); err == nil {
			t.Errorf("ParseConfig(%s) succeeded", s)
		}
	}
	dir := t.TempDir()
	if _, err := hf.LoadConfig(dir); !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "checkpoint directory") {
		t.Errorf("missing config.json: %v", err)
	}
	file := filepath.Join(dir, "model.safetensors")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := hf.LoadConfig(file); err == nil || !strings.Contains(err.Error(), file+" is a file, not a checkpoint directory") {
		t.Errorf("a file as the checkpoint directory: %v", err)
	}
}

func TestConfigRefusals(t *testing.T) {
	tests := []struct {
		name        string
		patch       map[string]any
		unsupported bool
		want        string // text the message must contain (the key and value)
	}{
		{"hidden not divisible", map[string]any{"hidden_size": 2050}, false, "hidden_size 2050 is not divisible by num_attention_heads 32"},
		{"kv not dividing heads", map[string]any{"num_key_value_heads": 5}, false, "num_attention_heads 32 is not divisible by num_key_value_heads 5"},
		{"odd head_dim", map[string]any{"head_dim": 63}, false, "head_dim 63"},
		{"zero head_dim", map[string]any{"head_dim": 0}, false, "head_dim must be positive"},
		{"zero hidden", map[string]any{"hidden_size": 0}, false, "hidden_size must be positive"},
		{"negative layers", map[string]any{"num_hidden_layers": -1}, false, "num_hidden_layers must be positive (got -1)"},
		{"no vocab", map[string]any{"vocab_size": nil}, false, "vocab_size must be positive"},
		{"zero intermediate", map[string]any{"intermediate_size": 0}, false, "intermediate_size must be positive"},
		{"zero kv", map[string]any{"num_key_value_heads": 0}, false, "num_key_value_heads must be positive"},
		{"eps", map[string]any{"rms_norm_eps": 0}, false, "rms_norm_eps"},
		{"theta", map[string]any{"rope_theta": -1}, false, "rope_theta"},
		{"dtype", map[string]any{"torch_dtype": "int8"}, true, `torch_dtype "int8"`},
		{"rope type", map[string]any{"rope_scaling": map[string]any{"rope_type": "yarn", "factor": 4.0}}, true, `rope_scaling.rope_type "yarn"`},
		{"llama3 factor", map[string]any{"rope_scaling": map[string]any{"rope_type": "llama3", "factor": 0, "low_freq_factor": 1, "high_freq_factor": 4, "original_max_position_embeddings": 8192}}, false, "rope_scaling.factor"},
		{"llama3 freq order", map[string]any{"rope_scaling": map[string]any{"rope_type": "llama3", "factor": 8, "low_freq_factor": 4, "high_freq_factor": 1, "original_max_position_embeddings": 8192}}, false, "high_freq_factor"},
		{"llama3 orig", map[string]any{"rope_scaling": map[string]any{"rope_type": "llama3", "factor": 8, "low_freq_factor": 1, "high_freq_factor": 4}}, false, "original_max_position_embeddings"},
		{"linear factor", map[string]any{"rope_scaling": map[string]any{"rope_type": "linear", "factor": -2}}, false, "rope_scaling.factor"},
		{"state length", map[string]any{"state_length": 0}, false, "state_length must be positive (got 0)"},
		{"bos outside vocab", map[string]any{"bos_token_id": 128256}, false, "bos_token_id 128256"},
		{"eos outside vocab", map[string]any{"eos_token_id": []any{1, -3}}, false, "eos_token_id -3"},
		{"negative window", map[string]any{"sliding_window": -4}, false, "sliding_window must be positive or null (got -4)"},
		{"layer_types length", map[string]any{"layer_types": []any{"full_attention"}}, false, "layer_types has 1 entries for 16 layers"},
		{"layer_types entry", map[string]any{"num_hidden_layers": 2, "layer_types": []any{"full_attention", "chunked_attention"}}, true, `layer_types[1] "chunked_attention"`},
		{"negative softcap", map[string]any{"final_logit_softcapping": -30.0}, false, "final_logit_softcapping must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := base()
			for k, v := range tt.patch {
				m[k] = v
			}
			dir := t.TempDir()
			b, _ := json.Marshal(m)
			if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
				t.Fatal(err)
			}
			c, err := hf.LoadConfig(dir)
			if err != nil {
				t.Fatal(err)
			}
			err = c.Validate()
			if err == nil {
				t.Fatal("Validate accepted the config")
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "hf: "+filepath.Join(dir, "config.json")+": ") || !strings.Contains(msg, tt.want) {
				t.Errorf("error %q does not name the file and contain %q", msg, tt.want)
			}
			if errors.Is(err, hf.ErrUnsupported) != tt.unsupported {
				t.Errorf("errors.Is(err, ErrUnsupported) = %v, want %v", !tt.unsupported, tt.unsupported)
			}
		})
	}
}

// TestGemma3SparseTextConfig reads a Gemma-3-4B-style multimodal config,
// whose text_config keeps only the keys that differ from Gemma3TextConfig's
// defaults: the rest must take those defaults, not LLaMA's.
func TestGemma3SparseTextConfig(t *testing.T) {
	c := parse(t, map[string]any{
		"architectures": []any{"Gemma3ForConditionalGeneration"}, "model_type": "gemma3",
		"text_config": map[string]any{"hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text",
			"num_hidden_layers": 34, "rope_scaling": map[string]any{"factor": 8.0, "rope_type": "linear"}, "sliding_window": 1024},
		"vision_config": map[string]any{"hidden_size": 1152}, "torch_dtype": "bfloat16",
	})
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.NumAttentionHeads != 8 || c.NumKeyValueHeads != 4 || c.HeadDim != 256 || c.VocabSize != 262208 ||
		c.RopeTheta != 1e6 || c.RMSNormEps != 1e-6 || c.QueryPreAttnScalar != 256 || c.RopeLocalBaseFreq != 10000 ||
		c.SlidingWindow != 1024 || c.SlidingWindowPattern != 6 || c.HiddenAct != "gelu_pytorch_tanh" ||
		!c.TieWordEmbeddings || c.RopeScaling == nil || c.RopeScaling.Factor != 8 || c.TorchDtype != "bfloat16" ||
		c.BOSTokenID == nil || *c.BOSTokenID != 2 || !reflect.DeepEqual(c.EOSTokenIDs, []int{1}) {
		t.Errorf("defaults not applied: %+v", c)
	}
	// An explicit null window stays null (the family refuses it); an
	// absent one is Gemma3TextConfig's 4096.
	n := parse(t, map[string]any{"model_type": "gemma3_text", "sliding_window": nil})
	a := parse(t, map[string]any{"model_type": "gemma3_text"})
	if n.SlidingWindow != 0 || a.SlidingWindow != 4096 {
		t.Errorf("sliding_window null → %d, absent → %d; want 0 and 4096", n.SlidingWindow, a.SlidingWindow)
	}
}
