package pipeline

import (
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/anemll/anemll/internal/arch"
	"github.com/anemll/anemll/internal/hf"
	"github.com/anemll/anemll/internal/reference"
	"github.com/anemll/anemll/internal/tokenizer"
)

// FP16Limit is the largest finite fp16 value.
const FP16Limit = 65504

// fp16Headroom is how far under FP16Limit the measured peak is brought:
// text the measurement did not see may go higher.
const fp16Headroom = 4

// fp16Sample is the text --fp16-scale measures the residual stream on
// when no calibration text is given.
const fp16Sample = `The Neural Engine runs half-precision arithmetic. Every value in the residual stream must stay below 65504, or it becomes infinite and the next norm turns it into NaN.
Q: How many programmers does it take to change a light bulb? A: None, that's a hardware problem.`

// fp16Tokens is how many tokens of the sample are measured.
const fp16Tokens = 64

// FP16Peak is what a measurement of a model's activations found.
type FP16Peak struct {
	// Residual is the largest |x| of the residual stream; Linear the
	// largest input of any linear layer (which α does not change).
	Residual, Linear float64
	Tokens           int
}

// resolveFP16Scale turns the --fp16-scale flag into α: "none" (or "1")
// is no scaling; a number in (0, 1] is used as given; "auto" measures the
// residual stream of families known to exceed fp16 (Gemma 3) and leaves
// others unscaled; "measure" measures any family. A measured α is the
// largest power of two (exact in fp16) bringing the peak under
// FP16Limit/fp16Headroom.
func resolveFP16Scale(flag string, cfg *hf.Config, fam *arch.Family, ck *hf.Checkpoint, modelDir string, log io.Writer) (float64, error) {
	switch strings.ToLower(flag) {
	case "", "auto":
		if !fam.FP16Risk {
			return 0, nil
		}
	case "measure":
	case "none", "1":
		return 0, nil
	default:
		if err := checkFP16Flag(flag); err != nil {
			return 0, err
		}
		a, _ := strconv.ParseFloat(flag, 64)
		fmt.Fprintf(log, "fp16 scale: α = %g (given)\n", a)
		return a, nil
	}
	fmt.Fprintf(log, "fp16 scale: measuring the residual stream with the reference forward pass (--fp16-scale none skips this) ...\n")
	start := time.Now()
	peak, err := MeasureFP16Peak(cfg, ck, modelDir)
	if err != nil {
		return 0, err
	}
	a := ScaleFor(peak.Residual)
	fmt.Fprintf(log, "fp16 scale: α = %g (residual stream peaks at %.4g over %d tokens, measured in %s; fp16 holds ±%d)\n",
		a, peak.Residual, peak.Tokens, time.Since(start).Round(100*time.Millisecond), FP16Limit)
	if peak.Linear > FP16Limit {
		fmt.Fprintf(log, "warning: a linear layer's input reaches %.4g, beyond fp16; the residual scale does not change it\n", peak.Linear)
	}
	if a == 1 {
		return 0, nil
	}
	return a, nil
}

// checkFP16Flag refuses an --fp16-scale value resolveFP16Scale would not
// take, before any work is done.
func checkFP16Flag(flag string) error {
	switch strings.ToLower(flag) {
	case "", "auto", "measure", "none", "1":
		return nil
	}
	if a, err := strconv.ParseFloat(flag, 64); err != nil || !(a > 0 && a <= 1) {
		return fmt.Errorf("pipeline: --fp16-scale %q: want auto, measure, none or a number in (0, 1]", flag)
	}
	return nil
}

// ScaleFor is the largest power of two α ≤ 1 with peak·α ≤
// FP16Limit/fp16Headroom.
func ScaleFor(peak float64) float64 {
	a := 1.0
	for peak*a > FP16Limit/fp16Headroom {
		a /= 2
	}
	return a
}

// MeasureFP16Peak runs the reference forward pass (weights read layer by
// layer, fp32 products, no LM head) over the built-in sample, tokenized with the checkpoint's
// tokenizer when it has one, and returns the peak activations.
func MeasureFP16Peak(cfg *hf.Config, ck *hf.Checkpoint, modelDir string) (FP16Peak, error) {
	ids, err := sampleIDs(modelDir, cfg.VocabSize)
	if err != nil {
		return FP16Peak{}, err
	}
	// Fast: a peak needs no float64 witness; Trace: nor the LM head's
	// logits (a 262k-entry vocabulary's head was most of the cost).
	m, err := reference.NewWithOptions(cfg, reference.CheckpointWeights(ck), reference.Options{Lazy: true, Fast: true})
	if err != nil {
		return FP16Peak{}, err
	}
	p := FP16Peak{Tokens: len(ids)}
	peak := func(dst *float64, x []float32) {
		for _, v := range x {
			*dst = math.Max(*dst, math.Abs(float64(v)))
		}
	}
	m.ObserveResidual(func(_ int, x []float32) { peak(&p.Residual, x) })
	m.Observe(func(_ string, x []float32) { peak(&p.Linear, x) })
	if err := m.Trace(ids); err != nil {
		return FP16Peak{}, fmt.Errorf("pipeline: measure fp16 range: %w", err)
	}
	return p, nil
}

// sampleIDs tokenizes fp16Sample with the checkpoint's tokenizer (no
// tokenizer.json: a fixed spread of ids) and keeps fp16Tokens of them.
func sampleIDs(dir string, vocab int) ([]int, error) {
	var ids []int
	if _, err := os.Stat(filepath.Join(dir, "tokenizer.json")); err == nil {
		tok, err := tokenizer.Load(dir)
		if err != nil {
			return nil, err
		}
		for len(ids) < fp16Tokens {
			ids = append(ids, tok.Encode(fp16Sample, len(ids) == 0)...)
		}
	} else {
		for i := range fp16Tokens {
			ids = append(ids, (i*7919+13)%vocab)
		}
	}
	ids = ids[:fp16Tokens]
	for i, id := range ids {
		if id >= vocab {
			ids[i] = id % vocab
		}
	}
	return ids, nil
}
