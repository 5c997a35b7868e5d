package decoder

import (
	"fmt"

	"github.com/anemll/anemll/internal/arch"
	"github.com/anemll/anemll/internal/hf"
	"github.com/anemll/anemll/internal/quant"
)

// Version is the converter version written into package metadata
// ("Converted with anemll-go v<Version>", com.anemll-go.version).
var Version = "0.1.0"

// Defaults used when an Options field is zero.
const (
	DefaultContextLength = 512
	DefaultBatchSize     = 64
	DefaultLUTGroupSize  = 8
	// DefaultSplitLMHead is ANEMLL's LM-head split for LLaMA.
	DefaultSplitLMHead = 8
	// MaxANEDim is the largest tensor dimension the Neural Engine takes.
	MaxANEDim = 16384
)

// LUTBits gives the palettization bit width of each part; 0 keeps fp16.
// The FFN width applies to the FFN, prefill and combined packages (ANEMLL
// converts parts 2 and 2_prefill with the same --lut).
type LUTBits struct {
	Embeddings, FFN, LMHead int
}

// Palettizer turns a weight into per-grouped-channel LUT form: indices
// holds one value in [0, 2^Bits) per element (unpacked), lut holds
// Shape[0]/GroupSize tables of 2^Bits fp16 entries, table g serving
// channels [g·GroupSize, (g+1)·GroupSize). pipeline.Palettize adapts
// internal/quant to it. It is called when the package writer first asks
// for the weight's indices or LUT, once per weight and package. It must
// not keep req.Weights, req.Indices or the indices it returns: the
// converter reuses their storage for the next weight.
type Palettizer func(req quant.Request) (indices []uint8, lut []uint16, err error)

// Options control a conversion. Zero fields take the documented defaults.
type Options struct {
	// ContextLength is the attention window C (default 512).
	ContextLength int
	// StateLength is the KV-cache length S; default config.json's
	// state_length, else ContextLength. ANEMLL forces max(512, C); we do
	// not. Must be ≥ ContextLength.
	StateLength int
	// BatchSize is the prefill batch B (default 64, ≤ ContextLength).
	BatchSize int
	// NumChunks splits the decoder layers (default 1, ≤ layer count).
	NumChunks int
	// Prefix starts every file name (default: the family's, as ANEMLL's
	// one-shot script picks it: "llama", "qwen", "qwen25", "gemma3", …).
	Prefix string
	// LUT selects palettization per part (0 = fp16).
	LUT LUTBits
	// LUTGroupSize is the number of output channels sharing one LUT
	// (default 8).
	LUTGroupSize int
	// SplitLMHead is the number of LM-head convs / logits outputs; 0 picks
	// one (see SplitFor).
	SplitLMHead int
	// Palettize is required when any LUT width is set.
	Palettize Palettizer
	// Eligible decides which weights are palettized (quant.Eligible is
	// coremltools' rule as ANEMLL uses it). Required when any LUT width is
	// set.
	Eligible func(shape []int64, groupSize int) bool
	// OnOverflow, if set, is told how many finite values of a weight
	// became ±Inf when rounded to fp16. It is called when the weight's
	// bytes are produced (by the package writer), possibly from several
	// goroutines at once.
	OnOverflow func(weight string, n int)
	// ResidualScale α (0 or 1: none) multiplies the residual stream so
	// activations that would overflow fp16 stay in range (a power of two is
	// exact in fp16; the pipeline's auto mode picks one):
	// the embeddings are scaled by α and every residual branch (o_proj and
	// down_proj, or Gemma's post-attention and post-feedforward norm gains)
	// by α too. RMSNorm is scale-invariant, so the function is unchanged
	// up to the norm epsilon's weight (far below fp16 rounding).
	ResidualScale float64
	// LUTGroups overrides LUTGroupSize per part (0 keeps LUTGroupSize;
	// PerTensor uses one table for the whole tensor), as ANEMLL's
	// --lutN bits,group.
	LUTGroups LUTGroups
	// Argmax makes the LM head return, per split, the index (split-local,
	// int32) and value (fp16) of its largest logit instead of the logits
	// (ANEMLL 0.3.5's --argmax).
	Argmax bool
	// Metadata holds extra user-defined package metadata written into every
	// package (for example what a calibrated conversion was calibrated on).
	Metadata map[string]string
	// AllowUnusedWeights turns the refusal of checkpoint tensors the
	// conversion does not use into a warning.
	AllowUnusedWeights bool
	// AllowMissingWeights converts a checkpoint that lacks tensors which
	// have a neutral default (norm gains, biases, a head tied to the
	// embeddings), with a warning listing them; others still fail.
	AllowMissingWeights bool
	// Warn, if set, receives one-line notes and warnings made while
	// planning (tensors left out).
	Warn func(msg string)
}

// PerTensor as a LUTGroups entry palettizes each tensor with a single
// table (ANEMLL's "bits,0" or "bits,tensor").
const PerTensor = -1

// LUTGroups gives the output channels per LUT of each part (0: the
// Options.LUTGroupSize default; PerTensor: one table per tensor).
type LUTGroups struct {
	Embeddings, FFN, LMHead int
}

var validLUTBits = map[int]bool{0: true, 1: true, 2: true, 3: true, 4: true, 6: true, 8: true}

// resolve fills defaults and checks the options against cfg.
func (o Options) resolve(cfg *hf.Config, fam *arch.Family) (Options, error) {
	bad := func(format string, a ...any) (Options, error) {
		return Options{}, fmt.Errorf("decoder: options: %s", fmt.Sprintf(format, a...))
	}
	if o.ContextLength == 0 {
		o.ContextLength = DefaultContextLength
	}
	stateFromConfig := o.StateLength == 0 && cfg.StateLength != 0
	if o.StateLength == 0 {
		o.StateLength = cfg.StateLength
	}
	if o.StateLength == 0 {
		o.StateLength = o.ContextLength
	}
	if o.BatchSize == 0 {
		o.BatchSize = DefaultBatchSize
	}
	if o.NumChunks == 0 {
		o.NumChunks = 1
	}
	if o.Prefix == "" {
		o.Prefix = fam.Prefix
	}
	if o.LUTGroupSize == 0 {
		o.LUTGroupSize = DefaultLUTGroupSize
	}
	for _, g := range []*int{&o.LUTGroups.Embeddings, &o.LUTGroups.FFN, &o.LUTGroups.LMHead} {
		if *g == 0 {
			*g = o.LUTGroupSize
		}
	}
	switch {
	case o.ContextLength < 1:
		return bad("context length %d must be at least 1", o.ContextLength)
	case o.StateLength < o.ContextLength && stateFromConfig:
		return bad("config.json state_length %d is below the context length %d; pass --state-length", o.StateLength, o.ContextLength)
	case o.StateLength < o.ContextLength:
		return bad("state length %d must be at least the context length %d", o.StateLength, o.ContextLength)
	case o.BatchSize < 1 || o.BatchSize > o.ContextLength:
		return bad("batch size %d must be between 1 and the context length %d", o.BatchSize, o.ContextLength)
	case o.NumChunks < 1 || o.NumChunks > cfg.NumHiddenLayers:
		return bad("chunk count %d must be between 1 and the layer count %d", o.NumChunks, cfg.NumHiddenLayers)
	case 2*max(o.ContextLength, o.StateLength) > MaxANEDim:
		return bad("RoPE table of 2·max(context %d, state %d) rows exceeds the Neural Engine's %d-element dimension limit",
			o.ContextLength, o.StateLength, MaxANEDim)
	case !(o.ResidualScale >= 0 && o.ResidualScale <= 1):
		return bad("fp16 residual scale %g must be in (0, 1]", o.ResidualScale)
	case o.LUTGroupSize < 1:
		return bad("LUT group size %d must be positive", o.LUTGroupSize)
	case o.LUTGroups.Embeddings < PerTensor || o.LUTGroups.FFN < PerTensor || o.LUTGroups.LMHead < PerTensor:
		return bad("LUT group sizes %+v must be positive, 0 (default) or PerTensor", o.LUTGroups)
	case o.SplitLMHead < 0 || o.SplitLMHead > cfg.VocabSize:
		return bad("LM head split %d must be between 0 (auto) and the vocabulary size %d", o.SplitLMHead, cfg.VocabSize)
	}
	for _, p := range []struct {
		name string
		bits int
	}{{"embeddings", o.LUT.Embeddings}, {"FFN", o.LUT.FFN}, {"LM head", o.LUT.LMHead}} {
		if !validLUTBits[p.bits] {
			return bad("%s LUT bits %d unsupported (want 0, 1, 2, 3, 4, 6 or 8)", p.name, p.bits)
		}
		if p.bits > 0 && o.Palettize == nil {
			return bad("%s LUT bits %d set but no Palettize function given", p.name, p.bits)
		}
		if p.bits > 0 && o.Eligible == nil {
			return bad("%s LUT bits %d set but no Eligible function given", p.name, p.bits)
		}
	}
	for _, c := range o.Prefix {
		if !(c == '_' || c == '-' || c == '.' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return bad("prefix %q may only hold letters, digits, '_', '-' and '.'", o.Prefix)
		}
	}
	if o.SplitLMHead == 0 {
		o.SplitLMHead = SplitFor(cfg.VocabSize, fam.SplitLMHead)
	}
	if rows := (cfg.VocabSize + o.SplitLMHead - 1) / o.SplitLMHead; rows > MaxANEDim {
		return bad("LM head split %d gives %d rows per part, over the Neural Engine's %d limit", o.SplitLMHead, rows, MaxANEDim)
	}
	return o, nil
}

// SplitFor picks the LM-head split for a vocabulary of v tokens. A
// family split (ANEMLL's 16 for Qwen and Gemma) is kept, doubled while a
// part would exceed 16384 rows. Otherwise it is the smallest K in [8, 64]
// dividing v with v/K ≤ 16384 (8 for LLaMA 2/3 vocabularies); if none
// divides, the smallest power of two K ≥ 8 with ceil(v/K) ≤ 16384, the
// last part then being padded (see LMHead). Never more parts than tokens.
func SplitFor(v, family int) int {
	if family > 0 {
		k := family
		for (v+k-1)/k > MaxANEDim {
			k *= 2
		}
		return max(min(k, v), 1)
	}
	if v <= DefaultSplitLMHead {
		return max(v, 1)
	}
	for k := DefaultSplitLMHead; k <= 64; k++ {
		if v%k == 0 && v/k <= MaxANEDim {
			return k
		}
	}
	k := DefaultSplitLMHead
	for (v+k-1)/k > MaxANEDim {
		k *= 2
	}
	return k
}
