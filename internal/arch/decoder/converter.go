// Package llama builds ANEMLL's Core ML packages for LLaMA-family
// checkpoints as MIL programs: embeddings (part 1), decoder chunks for
// decode (part 2, "FFN") and prefill (part 2_prefill), the LM head (part 3)
// and combined FFN+prefill packages, with the same file names, inputs,
// outputs, state and metadata keys as ANEMLL, fp16 throughout and optional
// LUT palettization.
//
// Two deliberate differences from ANEMLL: every decoder layer lands in
// exactly one chunk whatever the chunk count (arch.SplitLayers), and RoPE
// tables are computed as Hugging Face does, including "linear" and
// "llama3" rope_scaling.
//
// Weights are never loaded up front: every weight const is a lazy value
// that reads its tensor from the memory-mapped checkpoint when the package
// writer asks for its bytes.
package decoder

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/anemll/anemll/internal/arch"
	"github.com/anemll/anemll/internal/coreml"
	"github.com/anemll/anemll/internal/fp16"
	"github.com/anemll/anemll/internal/hf"
)

// StateName is the KV-cache state's name in every decoder package (ANEMLL's
// "model.model.kv_cache_0" as coremltools sanitises it).
const StateName = "model_model_kv_cache_0"

// Converter builds the packages of one checkpoint.
type Converter struct {
	cfg      *hf.Config
	ckpt     *hf.Checkpoint
	opts     Options
	layout   []arch.Range
	lmHead   string // HF name of the LM head matrix (lm_head or embeddings)
	ropeRows int
	cos, sin []uint16 // fp16 RoPE tables [ropeRows, head_dim]
}

// NewConverter checks cfg, opts and the checkpoint's tensor names, shapes
// and dtypes, and plans the chunks. It reads no weight data.
func NewConverter(cfg *hf.Config, ckpt *hf.Checkpoint, opts Options) (*Converter, error) {
	if cfg == nil || ckpt == nil {
		return nil, fmt.Errorf("decoder: nil config or checkpoint")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("decoder: %w", err)
	}
	if cfg.ModelType != "llama" || len(cfg.Architectures) > 0 && cfg.Architectures[0] != "LlamaForCausalLM" {
		return nil, fmt.Errorf("decoder: model_type %q / architectures %v: %w", cfg.ModelType, cfg.Architectures, hf.ErrUnsupported)
	}
	if cfg.HiddenAct != "" && cfg.HiddenAct != "silu" {
		return nil, fmt.Errorf("decoder: hidden_act %q is not supported (supported: silu): %w", cfg.HiddenAct, hf.ErrUnsupported)
	}
	o, err := opts.resolve(cfg)
	if err != nil {
		return nil, err
	}
	c := &Converter{cfg: cfg, ckpt: ckpt, opts: o}
	if c.layout, err = arch.SplitLayers(cfg.NumHiddenLayers, o.NumChunks); err != nil {
		return nil, fmt.Errorf("decoder: %w", err)
	}
	c.lmHead = "lm_head.weight"
	if cfg.TieWordEmbeddings {
		c.lmHead = "model.embed_tokens.weight"
	}
	if err := c.checkTensors(); err != nil {
		return nil, err
	}
	if k, p := o.SplitLMHead, c.lmPartRows(); (k-1)*p >= cfg.VocabSize {
		return nil, fmt.Errorf("decoder: options: LM head split %d of %d tokens leaves the last part empty", k, cfg.VocabSize)
	}
	c.ropeRows = 2 * max(o.ContextLength, o.StateLength)
	cos, sin, err := RopeTables(cfg, c.ropeRows)
	if err != nil {
		return nil, err
	}
	c.cos, c.sin = toHalf(cos), toHalf(sin)
	return c, nil
}

// Options returns the options with defaults filled in.
func (c *Converter) Options() Options { return c.opts }

// Config returns the model configuration.
func (c *Converter) Config() *hf.Config { return c.cfg }

// Layout returns the layers of each chunk, in chunk order.
func (c *Converter) Layout() []arch.Range { return append([]arch.Range(nil), c.layout...) }

// LUTBits returns the palettization width used for part p (0 = fp16).
func (c *Converter) LUTBits(p arch.Part) int {
	switch p {
	case arch.PartEmbeddings:
		return c.opts.LUT.Embeddings
	case arch.PartLMHead:
		return c.opts.LUT.LMHead
	}
	return c.opts.LUT.FFN
}

// FileName returns ANEMLL's package file name for part p (chunk counts from
// 0 and is ignored for unchunked parts).
func (c *Converter) FileName(p arch.Part, chunk int) (string, error) {
	return arch.FileName(c.opts.Prefix, p, c.LUTBits(p), chunk, c.opts.NumChunks)
}

// Part builds part p (chunk counts from 0; ignored for unchunked parts).
func (c *Converter) Part(p arch.Part, chunk int) (*coreml.Package, error) {
	switch p {
	case arch.PartEmbeddings:
		return c.Embeddings()
	case arch.PartLMHead:
		return c.LMHead()
	case arch.PartFFN:
		return c.FFNChunk(chunk)
	case arch.PartPrefill:
		return c.PrefillChunk(chunk)
	case arch.PartFFNPF:
		return c.CombinedChunk(chunk)
	}
	return nil, fmt.Errorf("decoder: unknown part %q", p)
}

func toHalf(f []float64) []uint16 {
	h := make([]uint16, len(f))
	for i, x := range f {
		h[i] = uint16(fp16.FromFloat64(x))
	}
	return h
}

// lmPartRows is the number of vocabulary rows per LM-head part.
func (c *Converter) lmPartRows() int {
	k := c.opts.SplitLMHead
	return (c.cfg.VocabSize + k - 1) / k
}

// checkTensors verifies every tensor the packages will read.
func (c *Converter) checkTensors() error {
	cfg := c.cfg
	H, I, V, d := int64(cfg.HiddenSize), int64(cfg.IntermediateSize), int64(cfg.VocabSize), int64(cfg.HeadDim)
	q, kv := int64(cfg.NumAttentionHeads)*d, int64(cfg.NumKeyValueHeads)*d
	type want struct {
		name  string
		shape []int64
	}
	ws := []want{{"model.embed_tokens.weight", []int64{V, H}}, {"model.norm.weight", []int64{H}}}
	if c.lmHead != "model.embed_tokens.weight" {
		ws = append(ws, want{c.lmHead, []int64{V, H}})
	}
	for l := 0; l < cfg.NumHiddenLayers; l++ {
		p := fmt.Sprintf("model.layers.%d.", l)
		ws = append(ws,
			want{p + "input_layernorm.weight", []int64{H}},
			want{p + "post_attention_layernorm.weight", []int64{H}},
			want{p + "self_attn.q_proj.weight", []int64{q, H}},
			want{p + "self_attn.k_proj.weight", []int64{kv, H}},
			want{p + "self_attn.v_proj.weight", []int64{kv, H}},
			want{p + "self_attn.o_proj.weight", []int64{H, q}},
			want{p + "mlp.gate_proj.weight", []int64{I, H}},
			want{p + "mlp.up_proj.weight", []int64{I, H}},
			want{p + "mlp.down_proj.weight", []int64{H, I}},
		)
		if cfg.AttentionBias {
			ws = append(ws,
				want{p + "self_attn.q_proj.bias", []int64{q}},
				want{p + "self_attn.k_proj.bias", []int64{kv}},
				want{p + "self_attn.v_proj.bias", []int64{kv}},
				want{p + "self_attn.o_proj.bias", []int64{H}},
			)
		}
		if cfg.MLPBias {
			ws = append(ws,
				want{p + "mlp.gate_proj.bias", []int64{I}},
				want{p + "mlp.up_proj.bias", []int64{I}},
				want{p + "mlp.down_proj.bias", []int64{H}},
			)
		}
	}
	for _, w := range ws {
		info, ok := c.ckpt.Info(w.name)
		if !ok {
			return fmt.Errorf("decoder: checkpoint has no tensor %q", w.name)
		}
		switch info.DType {
		case hf.F32, hf.F16, hf.BF16:
		default:
			return fmt.Errorf("decoder: tensor %q is %s, want F32, F16 or BF16: %w", w.name, info.DType, hf.ErrUnsupported)
		}
		if !equalShape(info.Shape, w.shape) {
			return fmt.Errorf("decoder: tensor %q has shape %v, config implies %v", w.name, info.Shape, w.shape)
		}
	}
	return nil
}

func equalShape(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// metadata returns ANEMLL's metadata for a package built with ws, with our
// identity and extra. A LUT package also lists its LUT width and the matrix
// weights left fp16; call it after the graph is built so ws.dense is full.
func (c *Converter) metadata(short string, ws *weightSet, extra map[string]string) coreml.Metadata {
	author := "Converted with anemll-go v" + Version
	ud := map[string]string{
		"com.anemll.info":           author,
		"com.anemll.context_length": strconv.Itoa(c.opts.ContextLength),
		"com.anemll.state_length":   strconv.Itoa(c.opts.StateLength),
		"com.anemll-go.version":     Version,
	}
	if ws.bits > 0 {
		ud["com.anemll.lut_bits"] = strconv.Itoa(ws.bits)
		ud["com.anemll-go.dense_weights"] = strings.Join(ws.dense, ",")
	}
	for k, v := range extra {
		ud[k] = v
	}
	return coreml.Metadata{ShortDescription: short, Version: Version, Author: author, UserDefined: ud}
}
