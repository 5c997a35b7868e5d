package quant

import "testing"

// BenchmarkPalettizeCalibratedLite measures the lite schedule on a
// 2048×512 weight with a full 512² H (the MLP projections of a hidden-512
// model, at MaxLiteGramWork).
func BenchmarkPalettizeCalibratedLite(b *testing.B) {
	w, st := synthCalib(2048, 512, 64, 11)
	st.factor()
	b.SetBytes(int64(len(w)))
	for b.Loop() {
		if _, _, err := PalettizeCalibrated(w, []int64{2048, 512}, st, Options{Bits: 4}); err != nil {
			b.Fatal(err)
		}
	}
}
