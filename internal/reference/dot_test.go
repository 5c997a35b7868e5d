package reference

import (
	"math/rand/v2"
	"testing"
)

// dotWide and dotWide2 give dot's result bit for bit, for lengths with
// and without a tail.
func TestDotWideSameAsDot(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{0, 1, 3, 4, 5, 8, 127, 128, 2049} {
		a0, a1, b := make([]float32, n), make([]float32, n), make([]float32, n)
		for i := range b {
			a0[i], a1[i], b[i] = float32(r.NormFloat64()), float32(r.NormFloat64()*1e3), float32(r.NormFloat64()*1e-3)
		}
		w0, w1 := widen(nil, a0), widen(nil, a1)
		d0, d1 := dot(a0, b), dot(a1, b)
		s0, s1 := dotWide2(w0, w1, b)
		if got := dotWide(w0, b); got != d0 || s0 != d0 || s1 != d1 {
			t.Errorf("n=%d: dotWide %v, dotWide2 %v %v, want %v %v", n, got, s0, s1, d0, d1)
		}
	}
}
