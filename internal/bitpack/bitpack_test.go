package bitpack

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"testing"
)

// refPack is the bit-by-bit definition: bit k of element i goes to stream bit
// i·b+k, stream bit s lives in byte s/8 at position s%8.
func refPack(vals []uint8, bits int) []byte {
	out := make([]byte, (len(vals)*bits+7)/8)
	for i, v := range vals {
		for k := 0; k < bits; k++ {
			if v>>k&1 == 1 {
				s := i*bits + k
				out[s/8] |= 1 << (s % 8)
			}
		}
	}
	return out
}

func TestGolden(t *testing.T) {
	seq := func(lo, hi uint8) []uint8 {
		var v []uint8
		for x := lo; x <= hi; x++ {
			v = append(v, x)
		}
		return v
	}
	tests := []struct {
		name string
		vals []uint8
		bits int
		hex  string
		pad  int
	}{
		// /work/shared/docs/coreml-format.md §4, dumped from coremltools.
		{"uint4 1..13", seq(1, 13), 4, "21436587a9cb0d", 4},
		{"uint6", []uint8{1, 2, 63, 4, 5}, 6, "81f01305", 2},
		// Hand-derived from the bit layout.
		{"uint1", []uint8{1, 0, 1, 1, 0, 0, 0, 1, 1}, 1, "8d01", 7},
		{"uint2", []uint8{3, 0, 1, 2, 1}, 2, "9301", 6},
		{"uint3", []uint8{7, 1, 2, 5}, 3, "8f0a", 4},
		{"uint8", []uint8{0, 255, 17}, 8, "00ff11", 0},
		{"int4 -1,-8,7 masked", []uint8{0xff, 0xf8, 7}, 4, "8f07", 4},
		{"empty", nil, 3, "", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Pack(nil, tc.vals, tc.bits)
			if h := hex.EncodeToString(got); h != tc.hex {
				t.Fatalf("Pack = %s, want %s", h, tc.hex)
			}
			if p := PadBits(len(tc.vals), tc.bits); p != tc.pad {
				t.Errorf("PadBits = %d, want %d", p, tc.pad)
			}
			if n := PackedLen(len(tc.vals), tc.bits); n != len(tc.hex)/2 {
				t.Errorf("PackedLen = %d, want %d", n, len(tc.hex)/2)
			}
			back, err := Unpack(nil, got, len(tc.vals), tc.bits)
			if err != nil {
				t.Fatal(err)
			}
			mask := uint8(1<<tc.bits - 1)
			for i, v := range tc.vals {
				if back[i] != v&mask {
					t.Errorf("Unpack[%d] = %d, want %d", i, back[i], v&mask)
				}
			}
		})
	}
}

// TestRoundTripAllWidths packs every width 1..8 at every length 0..80 (odd
// lengths, byte straddles) with random and extreme values, compares with the
// bit-by-bit reference and unpacks back; it also checks appending to a
// non-empty dst and that the padding bits are zero.
func TestRoundTripAllWidths(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for bits := 1; bits <= 8; bits++ {
		max := 1<<bits - 1
		for n := 0; n <= 80; n++ {
			for pattern := 0; pattern < 3; pattern++ {
				vals := make([]uint8, n)
				for i := range vals {
					switch pattern {
					case 0:
						vals[i] = uint8(rng.IntN(max + 1))
					case 1:
						vals[i] = uint8(max)
					case 2:
						vals[i] = uint8(i % (max + 1))
					}
				}
				want := refPack(vals, bits)
				prefix := []byte{0xaa, 0x55}
				got := Pack(append([]byte(nil), prefix...), vals, bits)
				if !bytes.Equal(got[:2], prefix) || !bytes.Equal(got[2:], want) {
					t.Fatalf("bits %d n %d pattern %d: Pack = %x, want %x", bits, n, pattern, got[2:], want)
				}
				if len(want) != PackedLen(n, bits) {
					t.Fatalf("bits %d n %d: PackedLen %d, want %d", bits, n, PackedLen(n, bits), len(want))
				}
				if pb := PadBits(n, bits); n > 0 && want[len(want)-1]>>(8-pb) != 0 && pb > 0 {
					t.Fatalf("bits %d n %d: padding bits not zero in %x", bits, n, want)
				}
				// Reuse a dst with spare capacity holding junk.
				dst := make([]uint8, 1, n+8)
				dst[0] = 99
				back, err := Unpack(dst, got[2:], n, bits)
				if err != nil {
					t.Fatal(err)
				}
				if back[0] != 99 || !bytes.Equal(back[1:], vals) {
					t.Fatalf("bits %d n %d: Unpack = %v, want %v", bits, n, back[1:], vals)
				}
			}
		}
	}
}

// TestPackReusesDirtyCapacity makes sure Pack clears spare capacity it writes
// into with OR operations.
func TestPackReusesDirtyCapacity(t *testing.T) {
	for _, bits := range []int{1, 2, 3, 4, 6} {
		buf := bytes.Repeat([]byte{0xff}, 16)
		got := Pack(buf[:0], []uint8{1, 0, 1}, bits)
		want := refPack([]uint8{1, 0, 1}, bits)
		if !bytes.Equal(got, want) {
			t.Errorf("bits %d: %x, want %x", bits, got, want)
		}
	}
}

func TestCheckRange(t *testing.T) {
	tests := []struct {
		vals []uint8
		bits int
		want error
	}{
		{[]uint8{0, 15}, 4, nil},
		{[]uint8{0, 16}, 4, ErrRange},
		{[]uint8{63}, 6, nil},
		{[]uint8{1, 2, 64}, 6, ErrRange},
		{[]uint8{7}, 3, nil},
		{[]uint8{8}, 3, ErrRange},
		{[]uint8{2}, 1, ErrRange},
		{[]uint8{255}, 8, nil},
		{nil, 0, ErrWidth},
		{nil, 9, ErrWidth},
	}
	for _, tc := range tests {
		err := CheckRange(tc.vals, tc.bits)
		if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
			t.Errorf("CheckRange(%v, %d) = %v, want %v", tc.vals, tc.bits, err, tc.want)
		}
	}
}

// TestPackMasks documents that Pack stores only the low bits.
func TestPackMasks(t *testing.T) {
	for bits := 1; bits < 8; bits++ {
		over := []uint8{uint8(1 << bits), 0xff}
		got := Pack(nil, over, bits)
		want := refPack([]uint8{0, uint8(1<<bits - 1)}, bits)
		if !bytes.Equal(got, want) {
			t.Errorf("bits %d: Pack(%v) = %x, want %x", bits, over, got, want)
		}
	}
}

func TestUnpackErrors(t *testing.T) {
	tests := []struct {
		name    string
		data    []byte
		n, bits int
		want    error
	}{
		{"short uint6", []byte{1, 2, 3}, 5, 6, nil},
		{"short uint4", []byte{1, 2}, 5, 4, nil},
		{"short uint8", []byte{1}, 2, 8, nil},
		{"negative n", nil, -1, 4, nil},
		{"width 0", nil, 1, 0, ErrWidth},
		{"width 9", nil, 1, 9, ErrWidth},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := Unpack([]uint8{7}, tc.data, tc.n, tc.bits)
			if err == nil {
				t.Fatal("no error")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("error %v, want %v", err, tc.want)
			}
			if len(out) != 1 || out[0] != 7 {
				t.Errorf("dst changed on error: %v", out)
			}
		})
	}
	if PackedLen(-1, 4) != -1 || PackedLen(3, 0) != -1 || PadBits(-2, 4) != -1 || PadBits(1, 9) != -1 {
		t.Error("PackedLen/PadBits accept bad arguments")
	}
}

func TestPackPanicsOnBadWidth(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Pack with width 0 did not panic")
		}
	}()
	Pack(nil, []uint8{1}, 0)
}

func FuzzUnpack(f *testing.F) {
	f.Add([]byte{0x21, 0x43, 0x65, 0x87, 0xa9, 0xcb, 0x0d}, 13, 4)
	f.Add([]byte{0x81, 0xf0, 0x13, 0x05}, 5, 6)
	f.Add([]byte{0xff}, 3, 3)
	f.Fuzz(func(t *testing.T, data []byte, n, bits int) {
		if n > 1<<16 {
			n = 1 << 16
		}
		vals, err := Unpack(nil, data, n, bits)
		if err != nil {
			return
		}
		// Re-pack and compare with the input bytes, ignoring the padding.
		got := Pack(nil, vals, bits)
		want := append([]byte(nil), data[:PackedLen(n, bits)]...)
		if pb := PadBits(n, bits); pb > 0 {
			want[len(want)-1] &= 0xff >> pb
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("re-pack %x, want %x", got, want)
		}
	})
}

func benchPack(b *testing.B, bits int, pack func(vals []uint8, bits int) []byte) {
	vals := make([]uint8, 1<<20)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range vals {
		vals[i] = uint8(rng.IntN(1 << bits))
	}
	b.SetBytes(int64(len(vals)))
	b.ResetTimer()
	for b.Loop() {
		pack(vals, bits)
	}
}

func BenchmarkPack(b *testing.B) {
	buf := make([]byte, 0, 1<<20)
	for _, bits := range []int{1, 2, 3, 4, 6, 8} {
		b.Run("bits="+string(rune('0'+bits)), func(b *testing.B) {
			benchPack(b, bits, func(v []uint8, bits int) []byte { return Pack(buf[:0], v, bits) })
		})
	}
	// Naive bit-by-bit baseline for comparison.
	b.Run("ref/bits=6", func(b *testing.B) { benchPack(b, 6, refPack) })
}

func BenchmarkUnpack(b *testing.B) {
	out := make([]uint8, 0, 1<<20)
	for _, bits := range []int{1, 2, 3, 4, 6, 8} {
		b.Run("bits="+string(rune('0'+bits)), func(b *testing.B) {
			vals := make([]uint8, 1<<20)
			for i := range vals {
				vals[i] = uint8(i % (1 << bits))
			}
			data := Pack(nil, vals, bits)
			b.SetBytes(int64(len(vals)))
			b.ResetTimer()
			for b.Loop() {
				if _, err := Unpack(out[:0], data, len(vals), bits); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestPackInRange: for values in range PackInRange gives Pack's bytes at
// every width and at lengths around multiples of eight; one value out of
// range anywhere (word body or tail) gives CheckRange's error naming it
// and leaves dst's length alone.
func TestPackInRange(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for bits := 1; bits <= 8; bits++ {
		for _, n := range []int{0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1000} {
			vals := make([]uint8, n)
			for i := range vals {
				vals[i] = uint8(rng.IntN(1 << bits))
			}
			prefix := []byte{0xaa}
			got, err := PackInRange(append([]byte(nil), prefix...), vals, bits)
			if err != nil || !bytes.Equal(got[1:], refPack(vals, bits)) || got[0] != 0xaa {
				t.Fatalf("bits %d n %d: PackInRange = %x, %v; want %x", bits, n, got, err, refPack(vals, bits))
			}
			if bits == 8 {
				continue
			}
			for _, at := range []int{0, n / 2, n - 1} {
				if n == 0 {
					break
				}
				bad := append([]uint8(nil), vals...)
				bad[at] = uint8(1<<bits) | bad[at]
				dst := []byte{1, 2}
				out, err := PackInRange(dst, bad, bits)
				want := CheckRange(bad, bits)
				if !errors.Is(err, ErrRange) || err.Error() != want.Error() || len(out) != 2 {
					t.Errorf("bits %d n %d bad at %d: len %d, %v; want %v", bits, n, at, len(out), err, want)
				}
			}
		}
	}
	if _, err := PackInRange(nil, []uint8{1}, 9); !errors.Is(err, ErrWidth) {
		t.Errorf("width 9: %v, want ErrWidth", err)
	}
}
