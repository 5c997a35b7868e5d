package fp16

import (
	"math"
	"testing"
)

func TestFromFloat32Table(t *testing.T) {
	tests := []struct {
		in   float32
		want Bits
	}{
		{0, 0}, {float32(math.Copysign(0, -1)), 0x8000},
		{1, 0x3c00}, {-2, 0xc000}, {0.5, 0x3800},
		{65504, 0x7bff}, {65520, 0x7c00}, // 65520 rounds up to Inf (tie to even)
		{65519, 0x7bff},
		{float32(math.Inf(1)), 0x7c00}, {float32(math.Inf(-1)), 0xfc00},
		{5.960464477539063e-08, 0x0001}, // smallest subnormal
		{2.980232238769531e-08, 0x0000}, // half of it: tie to even -> 0
		{4.470348358154297e-08, 0x0001}, // 0.75 ulp -> 1
		{6.097555160522461e-05, 0x03ff}, // largest subnormal
		{6.103515625e-05, 0x0400},       // smallest normal
		{1.0009765625, 0x3c01},
		{1.00048828125, 0x3c00}, // tie between 0x3c00 and 0x3c01 -> even
		{1.00146484375, 0x3c02}, // tie between 0x3c01 and 0x3c02 -> even
	}
	for _, tc := range tests {
		if got := FromFloat32(tc.in); got != tc.want {
			t.Errorf("FromFloat32(%g) = %#04x, want %#04x", tc.in, got, tc.want)
		}
	}
	if h := FromFloat32(float32(math.NaN())); !h.IsNaN() {
		t.Errorf("NaN -> %#04x, not NaN", h)
	}
}

// TestRoundTripAllHalves checks that every half value widens and narrows back
// to itself, and that rounding picks the nearest half for midpoints.
func TestRoundTripAllHalves(t *testing.T) {
	for i := 0; i < 1<<16; i++ {
		h := Bits(i)
		if h.IsNaN() {
			continue
		}
		f := h.Float32()
		if got := FromFloat32(f); got != h {
			t.Fatalf("%#04x -> %g -> %#04x", i, f, got)
		}
	}
	// Nearest rounding against float64 arithmetic on positive finite halves.
	for i := 0; i < 0x7bff; i++ {
		lo, hi := Bits(i).Float32(), Bits(i+1).Float32()
		mid := float32((float64(lo) + float64(hi)) / 2)
		want := Bits(i)
		if i&1 == 1 {
			want = Bits(i + 1)
		}
		if got := FromFloat32(mid); got != want {
			t.Fatalf("midpoint of %#04x,%#04x = %g -> %#04x, want %#04x", i, i+1, mid, got, want)
		}
	}
}

func TestBF16(t *testing.T) {
	tests := []struct {
		in   float32
		want uint16
	}{{1, 0x3f80}, {-2, 0xc000}, {1.00390625, 0x3f80}, {1.01171875, 0x3f82}, {3.14159, 0x4049}}
	for _, tc := range tests {
		if got := Float32ToBF16(tc.in); got != tc.want {
			t.Errorf("Float32ToBF16(%g) = %#04x, want %#04x", tc.in, got, tc.want)
		}
		if back := BF16ToFloat32(tc.want); Float32ToBF16(back) != tc.want {
			t.Errorf("bf16 %#04x does not round-trip", tc.want)
		}
	}
}

func TestEncodeOverflow(t *testing.T) {
	buf := make([]byte, 8)
	n := EncodeFloat32s(buf, []float32{1, 70000, -1e9, float32(math.Inf(1))})
	if n != 2 {
		t.Fatalf("overflow count %d, want 2", n)
	}
	out := make([]float32, 4)
	DecodeFloat32s(out, buf)
	if out[0] != 1 || !math.IsInf(float64(out[1]), 1) || !math.IsInf(float64(out[2]), -1) {
		t.Fatalf("decoded %v", out)
	}
}
