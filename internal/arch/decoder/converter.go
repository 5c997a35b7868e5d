// Package decoder builds ANEMLL's Core ML packages of a decoder-only
// language model as MIL programs, for every model family in arch.Families
// (the family's arch.Spec says which norms, biases, activation, attention
// scale, windows and RoPE each layer has): embeddings (part 1), decoder
// chunks for decode (part 2, "FFN") and prefill (part 2_prefill), the LM
// head (part 3) and combined FFN+prefill packages, with the same file
// names, inputs, outputs, state and metadata keys as ANEMLL, fp16
// throughout and optional LUT palettization.
//
// Deliberate differences from ANEMLL: every decoder layer lands in exactly
// one chunk whatever the chunk count (arch.SplitLayers); only the last
// chunk applies the final norm (ANEMLL's Qwen converters apply it in every
// decode chunk); RoPE tables are computed as Hugging Face does, including
// "linear" and "llama3" rope_scaling; sliding-window layers keep ANEMLL's
// unified KV cache and apply the window inside the graph from the token
// positions, so every path (decode, prefill of any batch size) is exact
// and no rotation is needed.
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
	cfg    *hf.Config
	spec   *arch.Spec
	ckpt   *hf.Checkpoint
	opts   Options
	layout []arch.Range
	// lmHead is the canonical name of the LM head matrix
	// ("lm_head.weight", or the embeddings when tied).
	lmHead string
	// missing holds canonical tensors absent from the checkpoint that
	// take their neutral default (Options.AllowMissingWeights).
	missing map[string]bool
	// names maps canonical tensor names ("model.…", "lm_head.weight") to
	// the checkpoint's.
	names    tensorNames
	ropeRows int
	// ropes are the fp16 RoPE tables [ropeRows, head_dim], one per
	// distinct (base, scaling) of the layers; ropeOf gives each layer's.
	ropes  []ropeTable
	ropeOf []int
	// misfit remembers the weights warnMisfit has reported.
	misfit misfits
}

// ropeTable is one RoPE configuration's cos and sin tables.
type ropeTable struct {
	cos, sin []uint16
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
	spec, err := arch.Resolve(cfg)
	if err != nil {
		return nil, err
	}
	o, err := opts.resolve(cfg, spec.Family)
	if err != nil {
		return nil, err
	}
	c := &Converter{cfg: cfg, spec: spec, ckpt: ckpt, opts: o}
	if c.layout, err = arch.SplitLayers(cfg.NumHiddenLayers, o.NumChunks); err != nil {
		return nil, fmt.Errorf("decoder: %w", err)
	}
	c.lmHead = "lm_head.weight"
	if cfg.TieWordEmbeddings {
		c.lmHead = "model.embed_tokens.weight"
	}
	if c.names, err = findNames(spec.Family, ckpt); err != nil {
		return nil, err
	}
	if err := c.checkTensors(); err != nil {
		return nil, err
	}
	if k, p := o.SplitLMHead, c.lmPartRows(); (k-1)*p >= cfg.VocabSize {
		return nil, fmt.Errorf("decoder: options: LM head split %d of %d tokens leaves the last part empty", k, cfg.VocabSize)
	}
	c.ropeRows = 2 * max(o.ContextLength, o.StateLength)
	type ropeKey struct {
		theta   float64
		scaling hf.RopeScaling
		scaled  bool
	}
	index := map[ropeKey]int{}
	for _, la := range spec.Layers {
		k := ropeKey{theta: la.RopeTheta}
		if la.RopeScaling != nil {
			k.scaling, k.scaled = *la.RopeScaling, true
		}
		i, ok := index[k]
		if !ok {
			cos, sin, err := RopeTables(cfg.HeadDim, la.RopeTheta, la.RopeScaling, c.ropeRows)
			if err != nil {
				return nil, err
			}
			i = len(c.ropes)
			index[k] = i
			c.ropes = append(c.ropes, ropeTable{toHalf(cos), toHalf(sin)})
		}
		c.ropeOf = append(c.ropeOf, i)
	}
	return c, nil
}

// windowed reports whether a sliding window of w positions changes
// attention: queries and keys lie in [0, ContextLength), so a window at
// least that long never masks anything and the layer is plain causal.
func (c *Converter) windowed(w int) bool { return w > 0 && w < c.opts.ContextLength }

// SlidingWindow is the largest window that changes attention (0: none);
// meta.yaml records it.
func (c *Converter) SlidingWindow() int {
	w := 0
	for _, la := range c.spec.Layers {
		if c.windowed(la.Window) {
			w = max(w, la.Window)
		}
	}
	return w
}

// Spec returns the model family applied to the configuration.
func (c *Converter) Spec() *arch.Spec { return c.spec }

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
	// Monolithic files carry the FFN width in their names, as ANEMLL's.
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
	case arch.PartMonolithic:
		return c.Monolithic(false)
	case arch.PartMonolithicPrefill:
		return c.Monolithic(true)
	case arch.PartMonolithicFull:
		return c.MonolithicFull()
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

// lmPartRows is the number of vocabulary rows per LM-head part: the
// vocabulary split evenly, rounded up. With a LUT on the LM head, it is
// rounded up further to a multiple of the LUT group size (when that leaves
// the last part some real rows), so that a vocabulary such as 32001 is
// palettized instead of left fp16: the extra rows are padding, as the last
// part's always were (zero weights, bias −Inf), and LMHeadChunkSizes still
// counts the real rows of each part.
func (c *Converter) lmPartRows() int {
	k, v := c.opts.SplitLMHead, c.cfg.VocabSize
	p := (v + k - 1) / k
	if g := c.opts.LUTGroups.LMHead; c.LUTBits(arch.PartLMHead) > 0 && g > 1 && p%g != 0 {
		if q := (p/g + 1) * g; (k-1)*q < v {
			p = q
		}
	}
	return p
}

// wantTensors lists every tensor the packages read (canonical names) with
// the shape config.json implies.
func (c *Converter) wantTensors() []wantTensor {
	cfg, sp := c.cfg, c.spec
	H, I, V, d := int64(cfg.HiddenSize), int64(cfg.IntermediateSize), int64(cfg.VocabSize), int64(cfg.HeadDim)
	q, kv := int64(cfg.NumAttentionHeads)*d, int64(cfg.NumKeyValueHeads)*d
	ws := []wantTensor{{"model.embed_tokens.weight", []int64{V, H}}, {"model.norm.weight", []int64{H}}}
	if c.lmHead != "model.embed_tokens.weight" {
		ws = append(ws, wantTensor{c.lmHead, []int64{V, H}})
	}
	for l := 0; l < cfg.NumHiddenLayers; l++ {
		p := fmt.Sprintf("model.layers.%d.", l)
		ws = append(ws,
			wantTensor{p + "input_layernorm.weight", []int64{H}},
			wantTensor{p + "post_attention_layernorm.weight", []int64{H}},
			wantTensor{p + "self_attn.q_proj.weight", []int64{q, H}},
			wantTensor{p + "self_attn.k_proj.weight", []int64{kv, H}},
			wantTensor{p + "self_attn.v_proj.weight", []int64{kv, H}},
			wantTensor{p + "self_attn.o_proj.weight", []int64{H, q}},
			wantTensor{p + "mlp.gate_proj.weight", []int64{I, H}},
			wantTensor{p + "mlp.up_proj.weight", []int64{I, H}},
			wantTensor{p + "mlp.down_proj.weight", []int64{H, I}},
		)
		if sp.Family.SandwichNorms {
			ws = append(ws,
				wantTensor{p + "pre_feedforward_layernorm.weight", []int64{H}},
				wantTensor{p + "post_feedforward_layernorm.weight", []int64{H}},
			)
		}
		if sp.Family.QKNorm {
			ws = append(ws,
				wantTensor{p + "self_attn.q_norm.weight", []int64{d}},
				wantTensor{p + "self_attn.k_norm.weight", []int64{d}},
			)
		}
		if sp.Biases.QKV {
			ws = append(ws,
				wantTensor{p + "self_attn.q_proj.bias", []int64{q}},
				wantTensor{p + "self_attn.k_proj.bias", []int64{kv}},
				wantTensor{p + "self_attn.v_proj.bias", []int64{kv}},
			)
		}
		if sp.Biases.O {
			ws = append(ws, wantTensor{p + "self_attn.o_proj.bias", []int64{H}})
		}
		if sp.Biases.MLP {
			ws = append(ws,
				wantTensor{p + "mlp.gate_proj.bias", []int64{I}},
				wantTensor{p + "mlp.up_proj.bias", []int64{I}},
				wantTensor{p + "mlp.down_proj.bias", []int64{H}},
			)
		}
	}
	return ws
}

type wantTensor struct {
	name  string
	shape []int64
}

// checkTensors verifies every tensor the packages will read, then that the
// checkpoint holds nothing else the conversion would silently drop.
func (c *Converter) checkTensors() error {
	used := map[string]bool{}
	for _, w := range c.wantTensors() {
		name := c.names.of(w.name)
		used[name] = true
		info, ok := c.ckpt.Info(name)
		if !ok {
			if err := c.noteMissing(w.name, name); err != nil {
				return err
			}
			continue
		}
		switch info.DType {
		case hf.F32, hf.F16, hf.BF16:
		default:
			return fmt.Errorf("decoder: tensor %q is %s, want F32, F16 or BF16: %w", name, info.DType, hf.ErrUnsupported)
		}
		if !equalShape(info.Shape, w.shape) {
			return fmt.Errorf("decoder: tensor %q has shape %v, config implies %v", name, info.Shape, w.shape)
		}
	}
	if err := c.reportMissing(); err != nil {
		return err
	}
	return c.checkUnused(used)
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
	if a := c.opts.ResidualScale; a != 0 && a != 1 {
		ud["com.anemll-go.fp16_scale"] = strconv.FormatFloat(a, 'g', -1, 64)
	}
	if ws.bits > 0 {
		ud["com.anemll.lut_bits"] = strconv.Itoa(ws.bits)
		ud["com.anemll-go.dense_weights"] = strings.Join(ws.dense, ",")
	}
	for k, v := range c.opts.Metadata {
		ud[k] = v
	}
	for k, v := range extra {
		ud[k] = v
	}
	return coreml.Metadata{ShortDescription: short, Version: Version, Author: author, UserDefined: ud}
}
