package verify

import (
	"strings"
	"testing"

	"github.com/anemll/anemll/internal/arch/decoder"
)

// TestTinyModelLUTAccuracy converts the tiny model with LUT6 FFN + LUT6 LM
// head and LUT4 FFN + LUT6 LM head, and checks the decode path against the
// checkpoint over 768 positions of fortune text. The bounds are what
// ANEMLL's own coremltools-palettized packages of this model reach
// (LUT6/LUT6: top-1 ≈ 94–95.5 %, mean KL ≈ 3.6e-3; LUT4/LUT6: top-1 ≈
// 73–89 %, mean KL ≈ 0.05): ours must be at least as good.
func TestTinyModelLUTAccuracy(t *testing.T) {
	windows := fortuneWindows(t, 3, 256)
	ref := tinyReference(t, nil)
	tests := []struct {
		name      string
		lut       decoder.LUTBits
		maxMeanKL float64
		minTop1   float64
	}{
		{"LUT6/LUT6", decoder.LUTBits{FFN: 6, LMHead: 6}, 3.6e-3, 0.94},
		{"LUT4/LUT6", decoder.LUTBits{FFN: 4, LMHead: 6}, 0.05, 0.73},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, comb := convertTiny(t, 2, 256, tc.lut)
			rep := compareWindows(t, comb, ref, windows, CompareDecode)
			var sb strings.Builder
			rep.Write(&sb)
			t.Logf("%s vs checkpoint:\n%s", tc.name, sb.String())
			d := rep.Decode
			if d.MeanKL > tc.maxMeanKL || d.Top1 < tc.minTop1 {
				t.Errorf("%s: top-1 %.2f%%, mean KL %.3g; want ≥ %.0f%% and ≤ %.3g", tc.name, 100*d.Top1, d.MeanKL, 100*tc.minTop1, tc.maxMeanKL)
			}
		})
	}
}
