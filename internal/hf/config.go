// Package hf reads Hugging Face checkpoints: config.json of decoder-only
// language models (LLaMA, Qwen 2/3, Mistral, Gemma 3 text) and safetensors
// weight files (single or sharded, memory-mapped), and writes
// safetensors files by streaming tensor data.
package hf

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"regexp"
)

// ConfigFile is the name of a checkpoint's model configuration file.
const ConfigFile = "config.json"

// ErrUnsupported is wrapped by errors for well-formed configurations and
// files that use a feature this package does not handle.
var ErrUnsupported = errors.New("unsupported")

// Config is the part of a Hugging Face config.json that describes a
// decoder-only language model. Defaults follow transformers' LlamaConfig
// where the key is absent; keys only some families use are kept raw here
// (a model family in internal/arch decides what they mean and which it
// supports). A multimodal config's text_config (Gemma 3's
// Gemma3ForConditionalGeneration) is read as the decoder's configuration,
// keeping the outer model_type and architectures.
type Config struct {
	Architectures         []string
	ModelType             string
	HiddenSize            int
	IntermediateSize      int
	NumHiddenLayers       int
	NumAttentionHeads     int
	NumKeyValueHeads      int // defaults to NumAttentionHeads
	HeadDim               int // defaults to HiddenSize / NumAttentionHeads
	VocabSize             int
	RMSNormEps            float64 // defaults to 1e-6
	RopeTheta             float64 // defaults to 10000
	RopeScaling           *RopeScaling
	MaxPositionEmbeddings int // defaults to 2048
	TieWordEmbeddings     bool
	AttentionBias         bool
	MLPBias               bool
	// HiddenAct is hidden_activation (Gemma) or hidden_act; "" when
	// neither is given (the family picks its default).
	HiddenAct   string
	BOSTokenID  *int
	EOSTokenIDs []int
	PadTokenID  *int
	TorchDtype  string // "bfloat16", "float16", "float32" or ""
	StateLength int    // ANEMLL's optional state_length; 0 when absent

	// SlidingWindow is sliding_window (0 when null or absent).
	SlidingWindow int
	// UseSlidingWindow is Qwen 2's use_sliding_window (false when absent);
	// MaxWindowLayers its max_window_layers.
	UseSlidingWindow bool
	MaxWindowLayers  int
	// LayerTypes is layer_types ("sliding_attention", "full_attention"),
	// nil when absent.
	LayerTypes []string
	// SlidingWindowPattern is sliding_window_pattern (or the older
	// _sliding_window_pattern), 0 when absent.
	SlidingWindowPattern int
	// QueryPreAttnScalar is Gemma's query_pre_attn_scalar (0 when absent).
	QueryPreAttnScalar float64
	// AttnLogitSoftcapping and FinalLogitSoftcapping are Gemma's soft caps
	// (0 when null or absent).
	AttnLogitSoftcapping, FinalLogitSoftcapping float64
	// RopeLocalBaseFreq is Gemma 3's rope_local_base_freq (0 when absent).
	RopeLocalBaseFreq float64
	// Nested reports that the decoder configuration came from text_config.
	Nested bool
	// TextModelType is text_config's model_type when Nested.
	TextModelType string

	// HeadDimExplicit reports whether config.json gave head_dim.
	HeadDimExplicit bool
	// Source is the path the configuration was read from (for messages).
	Source string

	stateLengthSet bool
}

// RopeScaling is the rope_scaling (or rope_parameters) block. RopeType is
// normalised: "" for none/"default", otherwise "llama3" or "linear".
type RopeScaling struct {
	RopeType                      string
	Factor                        float64
	LowFreqFactor                 float64
	HighFreqFactor                float64
	OriginalMaxPositionEmbeddings int
}

// rawConfig mirrors the JSON keys; pointers tell absent keys from zero values.
type rawConfig struct {
	Architectures         []string        `json:"architectures"`
	ModelType             string          `json:"model_type"`
	HiddenSize            int             `json:"hidden_size"`
	IntermediateSize      int             `json:"intermediate_size"`
	NumHiddenLayers       int             `json:"num_hidden_layers"`
	NumAttentionHeads     int             `json:"num_attention_heads"`
	NumKeyValueHeads      *int            `json:"num_key_value_heads"`
	HeadDim               *int            `json:"head_dim"`
	VocabSize             int             `json:"vocab_size"`
	RMSNormEps            *float64        `json:"rms_norm_eps"`
	RopeTheta             *float64        `json:"rope_theta"`
	RopeScaling           json.RawMessage `json:"rope_scaling"`
	RopeParameters        json.RawMessage `json:"rope_parameters"`
	MaxPositionEmbeddings *int            `json:"max_position_embeddings"`
	TieWordEmbeddings     *bool           `json:"tie_word_embeddings"`
	AttentionBias         bool            `json:"attention_bias"`
	MLPBias               bool            `json:"mlp_bias"`
	HiddenAct             *string         `json:"hidden_act"`
	HiddenActivation      *string         `json:"hidden_activation"`
	BOSTokenID            *int            `json:"bos_token_id"`
	EOSTokenID            json.RawMessage `json:"eos_token_id"`
	PadTokenID            *int            `json:"pad_token_id"`
	TorchDtype            string          `json:"torch_dtype"`
	Dtype                 string          `json:"dtype"`
	StateLength           *int            `json:"state_length"`

	SlidingWindow         json.RawMessage `json:"sliding_window"`
	UseSlidingWindow      *bool           `json:"use_sliding_window"`
	MaxWindowLayers       *int            `json:"max_window_layers"`
	LayerTypes            []string        `json:"layer_types"`
	SlidingWindowPattern  *int            `json:"sliding_window_pattern"`
	OldSlidingPattern     *int            `json:"_sliding_window_pattern"`
	QueryPreAttnScalar    json.RawMessage `json:"query_pre_attn_scalar"`
	AttnLogitSoftcapping  json.RawMessage `json:"attn_logit_softcapping"`
	FinalLogitSoftcapping json.RawMessage `json:"final_logit_softcapping"`
	RopeLocalBaseFreq     json.RawMessage `json:"rope_local_base_freq"`
	TextConfig            json.RawMessage `json:"text_config"`
}

type rawRope struct {
	RopeType                      string   `json:"rope_type"`
	Type                          string   `json:"type"`
	RopeTheta                     *float64 `json:"rope_theta"`
	Factor                        float64  `json:"factor"`
	LowFreqFactor                 float64  `json:"low_freq_factor"`
	HighFreqFactor                float64  `json:"high_freq_factor"`
	OriginalMaxPositionEmbeddings int      `json:"original_max_position_embeddings"`
}

// hubID matches a Hugging Face Hub repository id such as
// meta-llama/Llama-3.2-1B (owner/name), which users sometimes pass instead
// of a downloaded checkpoint directory.
var hubID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// LoadConfig reads and parses dir/config.json. It does not call Validate.
func LoadConfig(dir string) (*Config, error) {
	path := filepath.Join(dir, ConfigFile)
	b, err := os.ReadFile(path)
	if err != nil {
		if st, serr := os.Stat(dir); serr == nil && !st.IsDir() {
			return nil, fmt.Errorf("hf: %s is a file, not a checkpoint directory: give the directory that holds config.json and the *.safetensors", dir)
		}
		if errors.Is(err, fs.ErrNotExist) {
			if _, serr := os.Stat(dir); errors.Is(serr, fs.ErrNotExist) && hubID.MatchString(dir) {
				return nil, notExist(fmt.Sprintf("hf: %s is not a directory here; if it is a Hugging Face Hub id, download the checkpoint first (huggingface-cli download %s --local-dir DIR) and give --model DIR", dir, dir))
			}
			return nil, fmt.Errorf("hf: %s: %w: give a Hugging Face checkpoint directory (config.json + *.safetensors)", path, fs.ErrNotExist)
		}
		return nil, fmt.Errorf("hf: read config: %w", err)
	}
	c, err := ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("hf: %s: %w", path, err)
	}
	c.Source = path
	return c, nil
}

// ParseConfig parses the bytes of a config.json and applies defaults. It does
// not call Validate.
func ParseConfig(b []byte) (*Config, error) {
	var r rawConfig
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("parse config: %w", err)
	}
	if isNull(r.TextConfig) {
		return parseRaw(&r)
	}
	// A multimodal checkpoint: the decoder is text_config; the outer keys
	// name the model and may carry what the inner block leaves out.
	var in rawConfig
	if err := json.Unmarshal(r.TextConfig, &in); err != nil {
		return nil, fmt.Errorf("parse config: text_config: %w", err)
	}
	if !isNull(in.TextConfig) {
		return nil, fmt.Errorf("parse config: text_config is nested twice")
	}
	if in.TieWordEmbeddings == nil {
		in.TieWordEmbeddings = r.TieWordEmbeddings
	}
	if in.TorchDtype == "" && in.Dtype == "" {
		in.TorchDtype, in.Dtype = r.TorchDtype, r.Dtype
	}
	if in.BOSTokenID == nil {
		in.BOSTokenID = r.BOSTokenID
	}
	if isNull(in.EOSTokenID) {
		in.EOSTokenID = r.EOSTokenID
	}
	if in.PadTokenID == nil {
		in.PadTokenID = r.PadTokenID
	}
	c, err := parseRaw(&in)
	if err != nil {
		return nil, fmt.Errorf("%w (in text_config)", err)
	}
	c.Nested = true
	c.TextModelType = c.ModelType
	c.ModelType, c.Architectures = r.ModelType, r.Architectures
	return c, nil
}

// gemma3TextDefaults are transformers' Gemma3TextConfig defaults, which a
// config.json may leave out (Gemma3ForConditionalGeneration checkpoints
// save only the text_config keys that differ from them).
func gemma3TextDefaults(r *rawConfig) {
	setInt := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	setIntPtr := func(p **int, v int) {
		if *p == nil {
			*p = &v
		}
	}
	setFloat := func(p **float64, v float64) {
		if *p == nil {
			*p = &v
		}
	}
	setRaw := func(p *json.RawMessage, v string) {
		if len(*p) == 0 {
			*p = json.RawMessage(v)
		}
	}
	setInt(&r.VocabSize, 262208)
	setInt(&r.HiddenSize, 2304)
	setInt(&r.IntermediateSize, 9216)
	setInt(&r.NumHiddenLayers, 26)
	setInt(&r.NumAttentionHeads, 8)
	setIntPtr(&r.NumKeyValueHeads, 4)
	setIntPtr(&r.HeadDim, 256)
	setIntPtr(&r.MaxPositionEmbeddings, 131072)
	setRaw(&r.SlidingWindow, "4096") // only when absent: an explicit null stays null
	setIntPtr(&r.BOSTokenID, 2)
	setIntPtr(&r.PadTokenID, 0)
	setRaw(&r.EOSTokenID, "1")
	setFloat(&r.RMSNormEps, 1e-6)
	setFloat(&r.RopeTheta, 1e6)
	setRaw(&r.QueryPreAttnScalar, "256")
	setRaw(&r.RopeLocalBaseFreq, "10000")
	if r.TieWordEmbeddings == nil {
		t := true
		r.TieWordEmbeddings = &t
	}
	if r.HiddenActivation == nil && r.HiddenAct == nil {
		a := "gelu_pytorch_tanh"
		r.HiddenActivation = &a
	}
	if r.LayerTypes == nil && r.SlidingWindowPattern == nil && r.OldSlidingPattern == nil {
		setIntPtr(&r.SlidingWindowPattern, 6)
	}
}

func parseRaw(r *rawConfig) (*Config, error) {
	if r.ModelType == "gemma3_text" {
		gemma3TextDefaults(r)
	}
	c := &Config{
		Architectures:     r.Architectures,
		ModelType:         r.ModelType,
		HiddenSize:        r.HiddenSize,
		IntermediateSize:  r.IntermediateSize,
		NumHiddenLayers:   r.NumHiddenLayers,
		NumAttentionHeads: r.NumAttentionHeads,
		NumKeyValueHeads:  r.NumAttentionHeads,
		VocabSize:         r.VocabSize,
		RMSNormEps:        1e-6,
		RopeTheta:         10000,
		AttentionBias:     r.AttentionBias,
		MLPBias:           r.MLPBias,
		LayerTypes:        r.LayerTypes,
		BOSTokenID:        r.BOSTokenID,
		PadTokenID:        r.PadTokenID,
		TorchDtype:        r.TorchDtype,

		MaxPositionEmbeddings: 2048,
	}
	if c.TorchDtype == "" {
		c.TorchDtype = r.Dtype
	}
	if r.NumKeyValueHeads != nil {
		c.NumKeyValueHeads = *r.NumKeyValueHeads
	}
	if r.HeadDim != nil {
		c.HeadDim = *r.HeadDim
		c.HeadDimExplicit = true
	} else if c.NumAttentionHeads > 0 {
		c.HeadDim = c.HiddenSize / c.NumAttentionHeads
	}
	if r.RMSNormEps != nil {
		c.RMSNormEps = *r.RMSNormEps
	}
	if r.RopeTheta != nil {
		c.RopeTheta = *r.RopeTheta
	}
	if r.MaxPositionEmbeddings != nil {
		c.MaxPositionEmbeddings = *r.MaxPositionEmbeddings
	}
	if r.TieWordEmbeddings != nil {
		c.TieWordEmbeddings = *r.TieWordEmbeddings
	}
	if r.HiddenActivation != nil {
		c.HiddenAct = *r.HiddenActivation
	} else if r.HiddenAct != nil {
		c.HiddenAct = *r.HiddenAct
	}
	if !isNull(r.SlidingWindow) {
		if err := json.Unmarshal(r.SlidingWindow, &c.SlidingWindow); err != nil {
			return nil, fmt.Errorf("parse config: sliding_window must be an integer or null, got %s", r.SlidingWindow)
		}
	}
	if r.UseSlidingWindow != nil {
		c.UseSlidingWindow = *r.UseSlidingWindow
	}
	if r.MaxWindowLayers != nil {
		c.MaxWindowLayers = *r.MaxWindowLayers
	}
	if r.SlidingWindowPattern != nil {
		c.SlidingWindowPattern = *r.SlidingWindowPattern
	} else if r.OldSlidingPattern != nil {
		c.SlidingWindowPattern = *r.OldSlidingPattern
	}
	for _, f := range []struct {
		key string
		raw json.RawMessage
		dst *float64
	}{
		{"query_pre_attn_scalar", r.QueryPreAttnScalar, &c.QueryPreAttnScalar},
		{"attn_logit_softcapping", r.AttnLogitSoftcapping, &c.AttnLogitSoftcapping},
		{"final_logit_softcapping", r.FinalLogitSoftcapping, &c.FinalLogitSoftcapping},
		{"rope_local_base_freq", r.RopeLocalBaseFreq, &c.RopeLocalBaseFreq},
	} {
		if isNull(f.raw) {
			continue
		}
		if err := json.Unmarshal(f.raw, f.dst); err != nil {
			return nil, fmt.Errorf("parse config: %s must be a number or null, got %s", f.key, f.raw)
		}
	}
	if r.StateLength != nil {
		c.StateLength = *r.StateLength
		c.stateLengthSet = true
	}
	eos, err := parseIntOrList(r.EOSTokenID)
	if err != nil {
		return nil, fmt.Errorf("parse config: eos_token_id: %w", err)
	}
	c.EOSTokenIDs = eos
	// rope_parameters (newer transformers) takes precedence over rope_scaling.
	for _, blk := range []struct {
		key string
		raw json.RawMessage
	}{{"rope_scaling", r.RopeScaling}, {"rope_parameters", r.RopeParameters}} {
		if isNull(blk.raw) {
			continue
		}
		var rr rawRope
		if err := json.Unmarshal(blk.raw, &rr); err != nil {
			return nil, fmt.Errorf("parse config: %s: %w", blk.key, err)
		}
		if rr.RopeTheta != nil {
			c.RopeTheta = *rr.RopeTheta
		}
		typ := rr.RopeType
		if typ == "" {
			typ = rr.Type
		}
		if typ == "" || typ == "default" {
			c.RopeScaling = nil
			continue
		}
		c.RopeScaling = &RopeScaling{
			RopeType:                      typ,
			Factor:                        rr.Factor,
			LowFreqFactor:                 rr.LowFreqFactor,
			HighFreqFactor:                rr.HighFreqFactor,
			OriginalMaxPositionEmbeddings: rr.OriginalMaxPositionEmbeddings,
		}
	}
	return c, nil
}

func isNull(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) == 0 || string(t) == "null"
}

func parseIntOrList(raw json.RawMessage) ([]int, error) {
	if isNull(raw) {
		return nil, nil
	}
	var one int
	if err := json.Unmarshal(raw, &one); err == nil {
		return []int{one}, nil
	}
	var many []int
	if err := json.Unmarshal(raw, &many); err != nil {
		return nil, fmt.Errorf("want an integer or a list of integers, got %s", raw)
	}
	return many, nil
}

// Validate refuses configurations that no decoder this project knows could
// have: sizes, head layout, norms, RoPE, token ids and the sliding-window
// keys. Whether the model_type, architecture and activation are supported is
// the model family's decision (internal/arch), as is the meaning of the
// family-specific keys. Errors name the offending key and the file.
func (c *Config) Validate() error {
	file := ConfigFile
	if c.Source != "" {
		file = c.Source
	}
	bad := func(format string, a ...any) error {
		return fmt.Errorf("hf: %s: %s", file, fmt.Sprintf(format, a...))
	}
	unsupported := func(format string, a ...any) error {
		return fmt.Errorf("hf: %s: %s: %w", file, fmt.Sprintf(format, a...), ErrUnsupported)
	}
	for _, f := range []struct {
		key string
		v   int
	}{
		{"hidden_size", c.HiddenSize},
		{"intermediate_size", c.IntermediateSize},
		{"num_hidden_layers", c.NumHiddenLayers},
		{"num_attention_heads", c.NumAttentionHeads},
		{"num_key_value_heads", c.NumKeyValueHeads},
		{"vocab_size", c.VocabSize},
		{"max_position_embeddings", c.MaxPositionEmbeddings},
	} {
		if f.v <= 0 {
			return bad("%s must be positive (got %d)", f.key, f.v)
		}
	}
	if !c.HeadDimExplicit && c.HiddenSize%c.NumAttentionHeads != 0 {
		return bad("hidden_size %d is not divisible by num_attention_heads %d (and head_dim is absent)",
			c.HiddenSize, c.NumAttentionHeads)
	}
	if c.HeadDim <= 0 {
		return bad("head_dim must be positive (got %d)", c.HeadDim)
	}
	if c.HeadDim%2 != 0 {
		return bad("head_dim %d must be even for rotary embeddings", c.HeadDim)
	}
	if c.NumAttentionHeads%c.NumKeyValueHeads != 0 {
		return bad("num_attention_heads %d is not divisible by num_key_value_heads %d",
			c.NumAttentionHeads, c.NumKeyValueHeads)
	}
	if !(c.RMSNormEps > 0) || math.IsInf(c.RMSNormEps, 0) {
		return bad("rms_norm_eps must be positive and finite (got %g)", c.RMSNormEps)
	}
	if !(c.RopeTheta > 0) || math.IsInf(c.RopeTheta, 0) {
		return bad("rope_theta must be positive and finite (got %g)", c.RopeTheta)
	}
	switch c.TorchDtype {
	case "", "float32", "float16", "bfloat16":
	default:
		return unsupported("torch_dtype %q is not supported (supported: float32, float16, bfloat16)", c.TorchDtype)
	}
	if err := c.validateRope(bad, unsupported); err != nil {
		return err
	}
	if c.SlidingWindow < 0 {
		return bad("sliding_window must be positive or null (got %d)", c.SlidingWindow)
	}
	if c.SlidingWindowPattern < 0 {
		return bad("sliding_window_pattern must be positive (got %d)", c.SlidingWindowPattern)
	}
	if c.LayerTypes != nil && len(c.LayerTypes) != c.NumHiddenLayers {
		return bad("layer_types has %d entries for %d layers", len(c.LayerTypes), c.NumHiddenLayers)
	}
	for i, t := range c.LayerTypes {
		if t != "sliding_attention" && t != "full_attention" {
			return unsupported("layer_types[%d] %q is not supported (supported: sliding_attention, full_attention)", i, t)
		}
	}
	for _, f := range []struct {
		key string
		v   float64
	}{{"query_pre_attn_scalar", c.QueryPreAttnScalar}, {"attn_logit_softcapping", c.AttnLogitSoftcapping},
		{"final_logit_softcapping", c.FinalLogitSoftcapping}, {"rope_local_base_freq", c.RopeLocalBaseFreq}} {
		if f.v < 0 || math.IsInf(f.v, 0) || math.IsNaN(f.v) {
			return bad("%s must be positive and finite (got %g)", f.key, f.v)
		}
	}
	if c.stateLengthSet && c.StateLength <= 0 {
		return bad("state_length must be positive (got %d)", c.StateLength)
	}
	check := func(key string, id int) error {
		if id < 0 || id >= c.VocabSize {
			return bad("%s %d is outside the vocabulary [0, %d)", key, id, c.VocabSize)
		}
		return nil
	}
	if c.BOSTokenID != nil {
		if err := check("bos_token_id", *c.BOSTokenID); err != nil {
			return err
		}
	}
	for _, id := range c.EOSTokenIDs {
		if err := check("eos_token_id", id); err != nil {
			return err
		}
	}
	if c.PadTokenID != nil {
		if err := check("pad_token_id", *c.PadTokenID); err != nil {
			return err
		}
	}
	return nil
}

func (c *Config) validateRope(bad, unsupported func(string, ...any) error) error {
	rs := c.RopeScaling
	if rs == nil {
		return nil
	}
	pos := func(key string, v float64) error {
		if !(v > 0) || math.IsInf(v, 0) {
			return bad("rope_scaling.%s must be positive and finite (got %g)", key, v)
		}
		return nil
	}
	switch rs.RopeType {
	case "linear":
		return pos("factor", rs.Factor)
	case "llama3":
		for _, f := range []struct {
			key string
			v   float64
		}{{"factor", rs.Factor}, {"low_freq_factor", rs.LowFreqFactor}, {"high_freq_factor", rs.HighFreqFactor}} {
			if err := pos(f.key, f.v); err != nil {
				return err
			}
		}
		if rs.HighFreqFactor <= rs.LowFreqFactor {
			return bad("rope_scaling.high_freq_factor %g must exceed low_freq_factor %g",
				rs.HighFreqFactor, rs.LowFreqFactor)
		}
		if rs.OriginalMaxPositionEmbeddings <= 0 {
			return bad("rope_scaling.original_max_position_embeddings must be positive (got %d)",
				rs.OriginalMaxPositionEmbeddings)
		}
		return nil
	default:
		return unsupported("rope_scaling.rope_type %q is not supported (supported: default, linear, llama3)", rs.RopeType)
	}
}

// KVGroups returns how many query heads share one key/value head.
func (c *Config) KVGroups() int { return c.NumAttentionHeads / c.NumKeyValueHeads }
