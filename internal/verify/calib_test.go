package verify

import (
	"fmt"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/anemll/anemll/internal/arch"
	"github.com/anemll/anemll/internal/arch/decoder"
	"github.com/anemll/anemll/internal/calib"
	"github.com/anemll/anemll/internal/hf"
	"github.com/anemll/anemll/internal/pipeline"
	"github.com/anemll/anemll/internal/reference"
	"github.com/anemll/anemll/internal/runner"
	"github.com/anemll/anemll/internal/tokenizer"
)

const (
	calibrationText = "../../testdata/tiny-llama-fortunes/text/calibration.txt"
	devText         = "../../testdata/tiny-llama-fortunes/text/dev.txt"
)

// convertTinyCalibrated writes the tiny model's parts (separate FFN and
// prefill chunks, 2 chunks, context 256) with the given LUT widths,
// calibrated on calibrationText when cal is set.
func convertTinyCalibrated(t *testing.T, lut decoder.LUTBits, cal bool) *runner.Files {
	t.Helper()
	dir := t.TempDir()
	opts := pipeline.Options{Model: tinyModel, Output: dir, ContextLength: 256, BatchSize: 64, NumChunks: 2, LUT: lut}
	if cal {
		opts.Calibration = calibrationText
	}
	s, err := pipeline.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	write := func(p arch.Part, i int) string {
		path, err := s.WritePart(p, i, dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		return path
	}
	files := &runner.Files{Dir: dir, Embeddings: write(arch.PartEmbeddings, 0), LMHead: write(arch.PartLMHead, 0)}
	for i := range s.Conv.Layout() {
		files.Chunks = append(files.Chunks, runner.ChunkFiles{FFN: write(arch.PartFFN, i), Prefill: write(arch.PartPrefill, i)})
	}
	if cal {
		var sb strings.Builder
		s.Calib.WriteReport(&sb, "all parts")
		t.Logf("%s", strings.TrimSpace(sb.String()))
	}
	return files
}

// devWindows is all of dev.txt tokenized as the model was trained (BOS +
// fortune + EOS), cut into windows of size tokens (the last one shorter).
func devWindows(t *testing.T, size int) [][]int {
	t.Helper()
	tok, err := tokenizer.Load(tinyModel)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(devText)
	if err != nil {
		t.Fatal(err)
	}
	ids := calib.Tokenize(tok, string(raw))
	var w [][]int
	for s := 0; s < len(ids); s += size {
		w = append(w, ids[s:min(s+size, len(ids))])
	}
	return w
}

// TestCalibratedLUTAccuracy converts the tiny model with and without
// calibration on calibration.txt (4096 tokens, the default) and measures
// the decode path over all of dev.txt (3924 positions) against the
// checkpoint. Bounds: the measured values (see the README table) plus
// 5 % (mean KL) and minus 1 point (top-1), and calibrated at most 76 % of
// the uncalibrated mean KL at every width (measured: 70–73 %). The issue's
// targets (LUT4/LUT6 ≤ 0.022 and ≥ 90 %, LUT6 ≤ 0.0017) are not reached. Every calibrated conversion must
// also match the reference run on its own package weights at fp16
// thresholds (the graph is unchanged).
func TestCalibratedLUTAccuracy(t *testing.T) {
	if testing.Short() {
		t.Skip("converts and decodes the tiny model eight times")
	}
	windows := devWindows(t, 256)
	ref := tinyReference(t, nil)
	tests := []struct {
		lut                 decoder.LUTBits
		maxKL0, maxKL       float64 // uncalibrated, calibrated
		minTop1_0, minTop1_ float64
	}{
		{decoder.LUTBits{FFN: 4, LMHead: 6}, 0.047, 0.034, 0.833, 0.86},
		{decoder.LUTBits{FFN: 6, LMHead: 6}, 0.0030, 0.0022, 0.944, 0.946},
		{decoder.LUTBits{FFN: 3, LMHead: 6}, 0.197, 0.139, 0.68, 0.735},
		{decoder.LUTBits{FFN: 2, LMHead: 6}, 0.79, 0.556, 0.426, 0.533},
	}
	for _, tc := range tests {
		name := fmt.Sprintf("LUT%d/LUT%d", tc.lut.FFN, tc.lut.LMHead)
		t.Run(name, func(t *testing.T) {
			var kl [2]float64
			for i, cal := range []bool{false, true} {
				files := convertTinyCalibrated(t, tc.lut, cal)
				rep := compareWindows(t, files, ref, windows, CompareDecode)
				d := rep.Decode
				t.Logf("%s calibrated=%v: %d positions, top-1 %.2f%%, mean KL %.4g, max |Δlogit| %.3g", name, cal, d.Positions, 100*d.Top1, d.MeanKL, d.MaxAbsLogit)
				if d.Positions != 3924 {
					t.Errorf("%d positions, want all 3924 of dev.txt", d.Positions)
				}
				maxKL, minTop1 := tc.maxKL0, tc.minTop1_0
				if cal {
					maxKL, minTop1 = tc.maxKL, tc.minTop1_
				}
				if d.MeanKL > maxKL || d.Top1 < minTop1 {
					t.Errorf("calibrated=%v: top-1 %.2f%%, mean KL %.4g; want ≥ %.1f%% and ≤ %.4g", cal, 100*d.Top1, d.MeanKL, 100*minTop1, maxKL)
				}
				kl[i] = d.MeanKL
				if cal {
					own := tinyReference(t, func(base reference.Weights) reference.Weights {
						cfg, err := hf.LoadConfig(tinyModel)
						if err != nil {
							t.Fatal(err)
						}
						pw, err := PackageWeights(files, base, cfg)
						if err != nil {
							t.Fatal(err)
						}
						t.Cleanup(func() { pw.(io.Closer).Close() })
						return pw
					})
					prep := compareWindows(t, files, own, windows[:1], Compare)
					if err := prep.Check(DefaultThresholds); err != nil {
						t.Errorf("against its own package weights: %v", err)
					}
				}
			}
			if kl[1] > 0.76*kl[0] {
				t.Errorf("calibrated mean KL %.4g is above 76%% of the uncalibrated %.4g", kl[1], kl[0])
			}
		})
	}
}
