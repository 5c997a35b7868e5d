package reference

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/anemll/anemll/internal/fp16"
	"github.com/anemll/anemll/internal/hf"
)

// A family is how one Hugging Face model class computes, as far as the
// reference needs: which projections carry biases, which norms exist and
// what their gain is, the activation, the attention scale and caps, and which
// layers slide over a window with which rotary frequencies. It is written from
// the transformers modeling files (modeling_llama, modeling_mistral,
// modeling_qwen2, modeling_qwen3, modeling_gemma3) and shares nothing with
// the Core ML graph builder's own family table.
type family struct {
	modelType string
	// archs are the accepted architectures[0]; a config without
	// architectures is accepted.
	archs []string
	// resolve checks cfg for what this family refuses and describes the
	// computation.
	resolve func(cfg *hf.Config) (*spec, error)
}

// families is the reference's table, keyed by config.json model_type.
var families = map[string]family{
	"llama":       {"llama", []string{"LlamaForCausalLM"}, llamaSpec},
	"mistral":     {"mistral", []string{"MistralForCausalLM"}, mistralSpec},
	"qwen2":       {"qwen2", []string{"Qwen2ForCausalLM"}, qwen2Spec},
	"qwen3":       {"qwen3", []string{"Qwen3ForCausalLM"}, qwen3Spec},
	"gemma3_text": {"gemma3_text", []string{"Gemma3ForCausalLM"}, gemma3Spec},
	"gemma3":      {"gemma3", []string{"Gemma3ForConditionalGeneration"}, gemma3Spec},
}

// Families returns the model_type values the reference computes, sorted.
func Families() []string {
	var out []string
	for k := range families {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// spec is a family resolved for one configuration.
type spec struct {
	family string
	// Biases: q/k/v, o, and the MLP's three projections.
	qkvBias, oBias, mlpBias bool
	// qkNorm: an RMSNorm over head_dim on every query and key head, after
	// the projection and before RoPE.
	qkNorm bool
	// gemma selects Gemma's layer: (1 + w) norm gains, a norm after
	// attention and after the MLP (four per layer), embeddings scaled.
	gemma bool
	// act is the MLP activation: "silu" or "gelu_pytorch_tanh".
	act string
	// embedScale multiplies the embeddings (0: none).
	embedScale float32
	// attnScale multiplies q·k.
	attnScale float64
	// attnCap and finalCap are tanh soft caps on the attention scores and
	// the logits (0: none).
	attnCap, finalCap float64
	// layers holds each decoder layer's window and rotary frequencies.
	layers []layerSpec
	// nested: the weights may be under a multimodal model's language tower.
	nested bool
}

// layerSpec is what differs between decoder layers of one model.
type layerSpec struct {
	// window, when positive, restricts a query at position i to keys j
	// with i − j < window (Hugging Face's sliding-window rule).
	window  int
	invFreq []float64
}

// resolveFamily picks the family of cfg from the table and resolves it.
func resolveFamily(cfg *hf.Config) (*spec, error) {
	f, ok := families[cfg.ModelType]
	if !ok {
		return nil, fmt.Errorf("reference: model_type %q is not supported (supported: %s): %w",
			cfg.ModelType, strings.Join(Families(), ", "), hf.ErrUnsupported)
	}
	if len(cfg.Architectures) > 0 && !slices.Contains(f.archs, cfg.Architectures[0]) {
		return nil, fmt.Errorf("reference: model_type %q with architectures[0] %q is not supported (want %s): %w",
			cfg.ModelType, cfg.Architectures[0], strings.Join(f.archs, " or "), hf.ErrUnsupported)
	}
	s, err := f.resolve(cfg)
	if err != nil {
		return nil, fmt.Errorf("reference: %s: %w", f.modelType, err)
	}
	s.family = f.modelType
	return s, nil
}

func unsupported(format string, a ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, a...), hf.ErrUnsupported)
}

// checkAct accepts the activations the family allows ("" takes the first).
func checkAct(cfg *hf.Config, key string, allowed ...string) (string, error) {
	if cfg.HiddenAct == "" {
		return allowed[0], nil
	}
	if !slices.Contains(allowed, cfg.HiddenAct) {
		return "", unsupported("%s %q is not supported (supported: %s)", key, cfg.HiddenAct, strings.Join(allowed, ", "))
	}
	return cfg.HiddenAct, nil
}

// uniform gives every layer the same window and the config's RoPE.
func uniform(cfg *hf.Config, window int) ([]layerSpec, error) {
	inv, err := invFreq(cfg.HeadDim, cfg.RopeTheta, cfg.RopeScaling)
	if err != nil {
		return nil, err
	}
	ls := make([]layerSpec, cfg.NumHiddenLayers)
	for i := range ls {
		ls[i] = layerSpec{window: window, invFreq: inv}
	}
	return ls, nil
}

// llamaSpec: LlamaForCausalLM. attention_bias adds q/k/v/o biases, mlp_bias
// gate/up/down biases; every layer is causal over the whole prefix.
func llamaSpec(cfg *hf.Config) (*spec, error) {
	act, err := checkAct(cfg, "hidden_act", "silu")
	if err != nil {
		return nil, err
	}
	ls, err := uniform(cfg, 0)
	if err != nil {
		return nil, err
	}
	return &spec{qkvBias: cfg.AttentionBias, oBias: cfg.AttentionBias, mlpBias: cfg.MLPBias, act: act,
		attnScale: 1 / math.Sqrt(float64(cfg.HeadDim)), layers: ls}, nil
}

// mistralSpec: MistralForCausalLM is LLaMA without biases (its projections
// are built with bias=False whatever the config says) plus sliding_window on
// every layer when set.
func mistralSpec(cfg *hf.Config) (*spec, error) {
	act, err := checkAct(cfg, "hidden_act", "silu")
	if err != nil {
		return nil, err
	}
	ls, err := uniform(cfg, cfg.SlidingWindow)
	if err != nil {
		return nil, err
	}
	return &spec{act: act, attnScale: 1 / math.Sqrt(float64(cfg.HeadDim)), layers: ls}, nil
}

// qwenWindow refuses the sliding-window settings of Qwen 2 / Qwen 3 (no
// public checkpoint turns them on).
func qwenWindow(cfg *hf.Config) error {
	if cfg.UseSlidingWindow {
		return unsupported("use_sliding_window true is not supported (set it to false; no public checkpoint uses it)")
	}
	for i, t := range cfg.LayerTypes {
		if t != "full_attention" {
			return unsupported("layer_types[%d] %q is not supported (only full_attention)", i, t)
		}
	}
	return nil
}

// qwen2Spec: Qwen2ForCausalLM has q/k/v biases always and none on o_proj or
// the MLP.
func qwen2Spec(cfg *hf.Config) (*spec, error) {
	if err := qwenWindow(cfg); err != nil {
		return nil, err
	}
	act, err := checkAct(cfg, "hidden_act", "silu")
	if err != nil {
		return nil, err
	}
	ls, err := uniform(cfg, 0)
	if err != nil {
		return nil, err
	}
	return &spec{qkvBias: true, act: act, attnScale: 1 / math.Sqrt(float64(cfg.HeadDim)), layers: ls}, nil
}

// qwen3Spec: Qwen3ForCausalLM adds q_norm/k_norm (plain gain) per head
// before RoPE; attention_bias puts biases on q/k/v/o; no MLP biases.
func qwen3Spec(cfg *hf.Config) (*spec, error) {
	if err := qwenWindow(cfg); err != nil {
		return nil, err
	}
	act, err := checkAct(cfg, "hidden_act", "silu")
	if err != nil {
		return nil, err
	}
	ls, err := uniform(cfg, 0)
	if err != nil {
		return nil, err
	}
	return &spec{qkvBias: cfg.AttentionBias, oBias: cfg.AttentionBias, qkNorm: true, act: act,
		attnScale: 1 / math.Sqrt(float64(cfg.HeadDim)), layers: ls}, nil
}

// Gemma 3 defaults (Gemma3TextConfig) for keys a config leaves out.
const (
	gemmaDefaultPattern    = 6
	gemmaDefaultQueryScale = 256
	gemmaDefaultLocalBase  = 10000
)

// gemma3Spec: Gemma3ForCausalLM, or the text tower of
// Gemma3ForConditionalGeneration (config under text_config).
func gemma3Spec(cfg *hf.Config) (*spec, error) {
	nested := cfg.ModelType == "gemma3"
	if nested && (!cfg.Nested || cfg.TextModelType != "gemma3_text") {
		return nil, unsupported("text_config.model_type %q is not supported (want gemma3_text)", cfg.TextModelType)
	}
	act, err := checkAct(cfg, "hidden_activation", "gelu_pytorch_tanh")
	if err != nil {
		return nil, err
	}
	sliding := make([]bool, cfg.NumHiddenLayers)
	if cfg.LayerTypes != nil {
		if len(cfg.LayerTypes) != cfg.NumHiddenLayers {
			return nil, fmt.Errorf("layer_types has %d entries for %d layers", len(cfg.LayerTypes), cfg.NumHiddenLayers)
		}
		for i, t := range cfg.LayerTypes {
			switch t {
			case "sliding_attention":
				sliding[i] = true
			case "full_attention":
			default:
				return nil, unsupported("layer_types[%d] %q is not supported (supported: sliding_attention, full_attention)", i, t)
			}
		}
	} else {
		p := cfg.SlidingWindowPattern
		if p == 0 {
			p = gemmaDefaultPattern
		}
		for i := range sliding {
			sliding[i] = (i+1)%p != 0
		}
	}
	if slices.Contains(sliding, true) && cfg.SlidingWindow <= 0 {
		return nil, fmt.Errorf("sliding_window must be a positive number when layers use sliding_attention (got null or absent)")
	}
	global, err := invFreq(cfg.HeadDim, cfg.RopeTheta, cfg.RopeScaling)
	if err != nil {
		return nil, err
	}
	base := cfg.RopeLocalBaseFreq
	if base == 0 {
		base = gemmaDefaultLocalBase
	}
	local, err := invFreq(cfg.HeadDim, base, nil)
	if err != nil {
		return nil, err
	}
	ls := make([]layerSpec, cfg.NumHiddenLayers)
	for i := range ls {
		if sliding[i] {
			ls[i] = layerSpec{window: cfg.SlidingWindow, invFreq: local}
		} else {
			ls[i] = layerSpec{invFreq: global}
		}
	}
	qs := cfg.QueryPreAttnScalar
	if qs == 0 {
		qs = gemmaDefaultQueryScale
	}
	scale, err := embedScale(cfg)
	if err != nil {
		return nil, err
	}
	return &spec{qkvBias: cfg.AttentionBias, oBias: cfg.AttentionBias, qkNorm: true, gemma: true, act: act,
		embedScale: scale, attnScale: 1 / math.Sqrt(qs), attnCap: cfg.AttnLogitSoftcapping,
		finalCap: cfg.FinalLogitSoftcapping, layers: ls, nested: nested}, nil
}

// embedScale is Gemma's sqrt(hidden_size) normalizer as transformers
// applies it: a float32 buffer cast to the weights' dtype before the
// multiply, so a bfloat16 checkpoint multiplies by bf16(sqrt(H)).
func embedScale(cfg *hf.Config) (float32, error) {
	s := float32(math.Sqrt(float64(cfg.HiddenSize)))
	switch cfg.TorchDtype {
	case "bfloat16":
		return fp16.BF16ToFloat32(fp16.Float32ToBF16(s)), nil
	case "float16":
		return fp16.Round(s), nil
	case "float32", "":
		return s, nil
	}
	return 0, unsupported("torch_dtype %q is not supported (supported: float32, float16, bfloat16)", cfg.TorchDtype)
}

// InvFreq returns the rotary inverse frequencies 1/base^(2i/headDim), i <
// headDim/2, after rope_scaling rs (nil: none): "linear" divides them by the
// factor (the same as dividing positions), "llama3" applies transformers'
// _compute_llama3_parameters rule. Other rope types are an error wrapping
// hf.ErrUnsupported.
func InvFreq(headDim int, base float64, rs *hf.RopeScaling) ([]float64, error) {
	inv, err := invFreq(headDim, base, rs)
	if err != nil {
		return nil, fmt.Errorf("reference: %w", err)
	}
	return inv, nil
}

func invFreq(headDim int, base float64, rs *hf.RopeScaling) ([]float64, error) {
	if headDim <= 0 || headDim%2 != 0 {
		return nil, fmt.Errorf("head_dim %d must be positive and even for rotary embeddings", headDim)
	}
	if !(base > 0) || math.IsInf(base, 0) {
		return nil, fmt.Errorf("rotary base %g must be positive and finite", base)
	}
	inv := make([]float64, headDim/2)
	for i := range inv {
		inv[i] = 1 / math.Pow(base, float64(2*i)/float64(headDim))
	}
	if rs == nil {
		return inv, nil
	}
	switch rs.RopeType {
	case "", "default":
	case "linear":
		for i := range inv {
			inv[i] /= rs.Factor
		}
	case "llama3":
		orig := float64(rs.OriginalMaxPositionEmbeddings)
		lowWavelen := orig / rs.LowFreqFactor
		highWavelen := orig / rs.HighFreqFactor
		for i, f := range inv {
			wavelen := 2 * math.Pi / f
			switch {
			case wavelen > lowWavelen:
				inv[i] = f / rs.Factor
			case wavelen < highWavelen:
				// high frequency: unchanged
			default:
				smooth := (orig/wavelen - rs.LowFreqFactor) / (rs.HighFreqFactor - rs.LowFreqFactor)
				inv[i] = (1-smooth)*f/rs.Factor + smooth*f
			}
		}
	default:
		return nil, fmt.Errorf("rope_scaling.rope_type %q is not supported (supported: default, linear, llama3): %w",
			rs.RopeType, hf.ErrUnsupported)
	}
	return inv, nil
}
