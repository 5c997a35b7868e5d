package pipeline

import (
	"fmt"
	"io"
	"runtime/debug"
	"sync"

	"github.com/anemll/anemll/internal/calib"
	"github.com/anemll/anemll/internal/hf"
	"github.com/anemll/anemll/internal/quant"
	"github.com/anemll/anemll/internal/reference"
	"github.com/anemll/anemll/internal/tokenizer"
)

// Calibrator palettizes weights against activation statistics collected
// on a calibration text (see internal/calib) and keeps the errors of what
// it palettized, for the conversion report.
type Calibrator struct {
	Set  *calib.Set
	Text *calib.Text

	mu  sync.Mutex
	sum quant.CalibReport
	n   int
}

// NewCalibrator reads the calibration text at path, tokenizes it with the
// checkpoint's tokenizer and collects statistics on the reference forward
// pass of ck over at most tokens tokens (0: calib.DefaultTokens) in
// sequences of contextLength.
func NewCalibrator(modelDir string, cfg *hf.Config, ck *hf.Checkpoint, path string, tokens, contextLength int) (*Calibrator, error) {
	if tokens < 0 {
		return nil, fmt.Errorf("pipeline: --calibration-tokens %d: want a positive count", tokens)
	}
	text, err := calib.ReadText(path)
	if err != nil {
		return nil, err
	}
	tok, err := tokenizer.Load(modelDir)
	if err != nil {
		return nil, fmt.Errorf("pipeline: calibration needs the checkpoint's tokenizer: %w", err)
	}
	// Lazy: one layer's weights at a time, so statistics of a big model
	// cost about one layer of memory plus the Gram matrices. Fast: the
	// products in fp32 through the shared kernels (statistics need no
	// float64 witness).
	ref, err := reference.NewWithOptions(cfg, reference.CheckpointWeights(ck), reference.Options{Lazy: true, Fast: true})
	if err != nil {
		return nil, err
	}
	ids := calib.Tokenize(tok, string(text.Data))
	set, err := calib.Collect(ref, ids, calib.Options{ContextLength: contextLength, Tokens: tokens, Full: fullWidths(cfg)})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	set.SHA256 = text.SHA256
	// The reference's layer buffers and activations are garbage now; hand
	// them back so the conversion steps do not start at the statistics'
	// peak.
	debug.FreeOSMemory()
	return &Calibrator{Set: set, Text: text}, nil
}

// fullWidths returns which input widths are worth a full Gram matrix: those
// that some weight reading an input of that width can afford to use it for
// (quant.GramAffordable). The decoder's linear inputs are the normed
// hidden state (q, k, v, gate, up and the LM head read it; k_proj has the
// fewest rows), the attention output (o_proj) and the MLP activation
// (down_proj), both feeding hidden-size rows; wider inputs, and widths no
// weight can afford, collect the diagonal only.
func fullWidths(cfg *hf.Config) func(in int) bool {
	rows := map[int]int{} // input width -> fewest rows of a weight reading it
	note := func(in, r int) {
		if in <= 0 || r <= 0 {
			return
		}
		if old, ok := rows[in]; !ok || r < old {
			rows[in] = r
		}
	}
	h := cfg.HiddenSize
	note(h, cfg.NumKeyValueHeads*cfg.HeadDim)
	note(h, cfg.NumAttentionHeads*cfg.HeadDim)
	note(h, cfg.IntermediateSize)
	note(cfg.NumAttentionHeads*cfg.HeadDim, h)
	note(cfg.IntermediateSize, h)
	return func(in int) bool {
		r, ok := rows[in]
		if !ok {
			return in <= calib.DefaultFullLimit
		}
		return in <= calib.DefaultFullLimit && quant.GramAffordable(r, in)
	}
}

// Palettize is the converter's palettizer with calibration: the request's
// statistics are looked up by tensor name (LM-head splits share the head's)
// and the palette minimises the output error on them, with the full Gram
// matrix where that is affordable (quant.GramAffordable: the full or the
// lite schedule) and its diagonal elsewhere.
func (c *Calibrator) Palettize(req quant.Request) ([]uint8, []uint16, error) {
	st, err := c.Set.For(req)
	if err != nil {
		return nil, nil, err
	}
	req.Stats = st.Affordable(int(req.Shape[0]))
	p, rep, err := quant.PalettizeRequest(req, quant.Options{})
	if err != nil {
		return nil, nil, err
	}
	c.mu.Lock()
	c.sum.Add(rep)
	c.n++
	c.mu.Unlock()
	return p.Indices, p.LUT, nil
}

// Take returns the summed report of the weights palettized since the last
// Take, and how many there were.
func (c *Calibrator) Take() (quant.CalibReport, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, n := c.sum, c.n
	c.sum, c.n = quant.CalibReport{}, 0
	return r, n
}

// WriteReport prints one line for the weights palettized since the last
// Take: weight-space squared error and calibrated output error (relative
// to the output energy) without and with calibration. Nothing is printed
// if no weight was palettized.
func (c *Calibrator) WriteReport(w io.Writer, what string) {
	r, n := c.Take()
	if n == 0 {
		return
	}
	rel := func(x float64) float64 {
		if r.OutputRef > 0 {
			return x / r.OutputRef
		}
		return 0
	}
	fmt.Fprintf(w, "  calibration %s (%d weights): weight error %.4g -> %.4g, output error %.4g -> %.4g (relative)\n",
		what, n, r.Weight0, r.Weight, rel(r.Output0), rel(r.Output))
}
