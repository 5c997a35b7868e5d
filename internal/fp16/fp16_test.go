package fp16

import (
	"math"
	"math/rand/v2"
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

func TestFromFloat64Table(t *testing.T) {
	tests := []struct {
		in   float64
		want Bits
	}{
		{0, 0}, {math.Copysign(0, -1), 0x8000},
		{1, 0x3c00}, {-2, 0xc000}, {65504, 0x7bff}, {65520, 0x7c00}, {-65520, 0xfc00},
		{65519.999999, 0x7bff}, {1e300, 0x7c00},
		{math.Inf(1), 0x7c00}, {math.Inf(-1), 0xfc00},
		{0x1p-24, 0x0001}, {0x1p-25, 0x0000}, {-0x1p-25, 0x8000},
		// Just beyond half the smallest subnormal: float32 rounds this to
		// exactly -2^-25 (a tie, which goes to -0); the true nearest is 0x8001.
		{-(0x1p-25 + 0x1p-60), 0x8001},
		{0x1p-25 + 0x1p-60, 0x0001},
		{0x1p-26, 0x0000},
		// 1 + half an ulp + a sliver below float32 resolution rounds up.
		{1 + 0x1p-11 + 0x1p-40, 0x3c01},
		{1 + 0x1p-11, 0x3c00}, // exact tie -> even
		{6.103515625e-05, 0x0400},
		{0x1p-14 - 0x1p-25, 0x0400}, // tie between largest subnormal and smallest normal -> even (0x0400)
	}
	for _, tc := range tests {
		if got := FromFloat64(tc.in); got != tc.want {
			t.Errorf("FromFloat64(%.17g) = %#04x, want %#04x", tc.in, got, tc.want)
		}
	}
	if h := FromFloat64(math.NaN()); !h.IsNaN() {
		t.Errorf("NaN -> %#04x, not NaN", h)
	}
}

// TestFromFloat64Nearest checks FromFloat64 against a search of the
// neighbouring halves, and against FromFloat32 on values float32 holds.
func TestFromFloat64Nearest(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 200000; i++ {
		var x float64
		h := Bits(rng.IntN(0x7bff))
		mid := (float64(h.Float32()) + float64((h + 1).Float32())) / 2
		switch i % 4 {
		case 0:
			x = rng.NormFloat64() * math.Exp2(float64(rng.IntN(40)-30))
		case 1:
			x = mid
		case 2: // off a midpoint by less than float32 resolution
			x = mid * (1 + 1e-12*float64(rng.IntN(3)-1))
		case 3:
			x = float64(h.Float32())
		}
		if rng.IntN(2) == 0 {
			x = -x
		}
		got := FromFloat64(x)
		gd := math.Abs(float64(got.Float32()) - x)
		for _, c := range []Bits{got - 1, got + 1, got ^ 0x8000} {
			if c.IsNaN() || c.IsInf() {
				continue
			}
			d := math.Abs(float64(c.Float32()) - x)
			if d < gd || (d == gd && got&1 == 1 && got&0x7fff != 0) {
				t.Fatalf("FromFloat64(%.17g) = %#04x, but %#04x is nearer or even", x, got, c)
			}
		}
		if f := float32(x); float64(f) == x {
			if want := FromFloat32(f); got != want {
				t.Fatalf("FromFloat64(%g) = %#04x, FromFloat32 = %#04x", x, got, want)
			}
		}
	}
	for i := 0; i < 1<<20; i++ { // float32 bit patterns spread over the range
		f := math.Float32frombits(uint32(i) * 4099)
		if math.IsNaN(float64(f)) {
			continue
		}
		if got, want := FromFloat64(float64(f)), FromFloat32(f); got != want {
			t.Fatalf("FromFloat64(%g) = %#04x, FromFloat32 = %#04x", f, got, want)
		}
	}
}
