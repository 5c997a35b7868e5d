package verify

import (
	"strings"
	"testing"

	"github.com/anemll/anemll/internal/arch/decoder"
)

// TestTinyModelLUTAccuracy converts the tiny model with LUT6 FFN + LUT6 LM
// head and LUT4 FFN + LUT6 LM head, and checks the decode path against the
// checkpoint over 768 positions of fortune text. Measured: LUT6/LUT6 top-1
// 96.35 %, mean KL 3.38e-3; LUT4/LUT6 top-1 82.81 %, mean KL 0.0438. The
// bounds sit a little under those (95 % / 3.6e-3 and 80 % / 0.047), so a
// palettizer that got worse fails; ANEMLL's own coremltools-palettized
// packages of this model reach 94–95.5 % / 3.6e-3 and 73–89 % / 0.05.
func TestTinyModelLUTAccuracy(t *testing.T) {
	windows := fortuneWindows(t, 3, 256)
	ref := tinyReference(t, nil)
	tests := []struct {
		name      string
		lut       decoder.LUTBits
		maxMeanKL float64
		minTop1   float64
	}{
		{"LUT6/LUT6", decoder.LUTBits{FFN: 6, LMHead: 6}, 3.6e-3, 0.95},
		{"LUT4/LUT6", decoder.LUTBits{FFN: 4, LMHead: 6}, 0.047, 0.80},
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
