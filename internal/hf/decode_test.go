package hf

import (
	"encoding/binary"
	"math"
	"testing"

	"github.com/anemll/anemll/internal/fp16"
)

// TestDecodeBF16AllPatterns: the table decode of every BF16 bit pattern
// equals rounding its float32 value with fp16.FromFloat32, and the overflow
// count is the number of finite patterns that become ±Inf.
func TestDecodeBF16AllPatterns(t *testing.T) {
	src := make([]byte, 2<<16)
	for i := range 1 << 16 {
		binary.LittleEndian.PutUint16(src[2*i:], uint16(i))
	}
	dst := make([]uint16, 1<<16)
	overflow, err := DecodeFloat16(dst, src, BF16)
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for i := range 1 << 16 {
		f := fp16.BF16ToFloat32(uint16(i))
		h := fp16.FromFloat32(f)
		if dst[i] != uint16(h) {
			t.Fatalf("bf16 %#04x: got %#04x, want %#04x", i, dst[i], uint16(h))
		}
		if h.IsInf() && !math.IsInf(float64(f), 0) {
			want++
		}
	}
	if overflow != want || want == 0 {
		t.Errorf("overflow %d, want %d (> 0)", overflow, want)
	}
}

// TestDecodeBF16Parallel: a decode large enough to be split across cores
// gives the same values and overflow count as the serial decode.
func TestDecodeBF16Parallel(t *testing.T) {
	n := 3*parallelDecodeMin + 12345
	src := make([]byte, 2*n)
	x := uint32(1)
	for i := range n {
		x = x*1664525 + 1013904223
		binary.LittleEndian.PutUint16(src[2*i:], uint16(x>>16))
	}
	got := make([]uint16, n)
	overflow, err := DecodeFloat16(got, src, BF16)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]uint16, n)
	wantOverflow := decodeBF16(want, src)
	if overflow != wantOverflow || wantOverflow == 0 {
		t.Errorf("overflow %d, serial %d (want > 0)", overflow, wantOverflow)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("value %d: %#04x, serial %#04x", i, got[i], want[i])
		}
	}
}

// TestDecodeBF16Tails: the four-at-a-time decode equals a per-value table
// decode for every length near a multiple of four, with an overflowing,
// an infinite, a NaN or no special value in the body or the tail.
func TestDecodeBF16Tails(t *testing.T) {
	tab := bf16Table()
	for n := 0; n <= 13; n++ {
		for _, special := range []uint16{0, 0x4780 | 0x7f, 0xc77f, 0x7f80, 0xff80, 0x7fc1} {
			for at := range max(n, 1) {
				src := make([]byte, 2*n)
				x := uint32(n*7 + at)
				for i := range n {
					x = x*1664525 + 1013904223
					v := uint16(x>>16)&0x3fff | uint16(x)&0x8000 // |v| < 2: no overflow
					if i == at && special != 0 {
						v = special
					}
					binary.LittleEndian.PutUint16(src[2*i:], v)
				}
				want := make([]uint16, n)
				wantOver := 0
				for i := range n {
					b := binary.LittleEndian.Uint16(src[2*i:])
					want[i] = tab.half[b]
					f := fp16.BF16ToFloat32(b)
					if fp16.FromFloat32(f).IsInf() && !math.IsInf(float64(f), 0) {
						wantOver++
					}
				}
				got := make([]uint16, n)
				over := decodeBF16(got, src)
				if over != wantOver {
					t.Errorf("n %d, %#04x at %d: overflow %d, want %d", n, special, at, over, wantOver)
				}
				for i := range want {
					if got[i] != want[i] {
						t.Fatalf("n %d, %#04x at %d: value %d = %#04x, want %#04x", n, special, at, i, got[i], want[i])
					}
				}
			}
		}
	}
}
