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
