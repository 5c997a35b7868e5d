// Package bitpack packs and unpacks sub-byte unsigned integers the way Core ML
// stores them in weight.bin blobs and in immediate `bytes` values.
//
// Element i of a b-bit stream occupies bits [i·b, i·b+b) of the byte stream,
// counting bits LSB-first within each byte (bit 0 is the least significant bit
// of byte 0). Elements may straddle a byte boundary (3- and 6-bit widths). A
// stream of n elements takes ceil(n·b/8) bytes and the unused high bits of the
// last byte are zero. Width 8 is plain bytes. Signed int4 is stored as the
// two's-complement low nibble, so callers pass uint8(int8(v)) and rely on the
// masking that Pack documents.
package bitpack

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrWidth reports a bit width outside 1..8.
var ErrWidth = errors.New("bitpack: bit width must be 1..8")

// ErrRange reports a value that does not fit in the requested bit width.
var ErrRange = errors.New("bitpack: value out of range for bit width")

// validWidth reports whether bits is a supported element width.
func validWidth(bits int) bool { return bits >= 1 && bits <= 8 }

// PackedLen returns the number of bytes n elements of the given width occupy,
// ceil(n·bits/8). It returns -1 for a negative n or a width outside 1..8.
func PackedLen(n, bits int) int {
	if n < 0 || !validWidth(bits) {
		return -1
	}
	// n·bits may overflow for absurd n; split to stay exact.
	return n/8*bits + (n%8*bits+7)/8
}

// PadBits returns the number of unused bits in the last byte of a packed
// stream of n elements, (8 − n·bits mod 8) mod 8, the value Core ML stores in
// blob_metadata.padding_size_in_bits. It returns -1 for a negative n or a
// width outside 1..8.
func PadBits(n, bits int) int {
	if n < 0 || !validWidth(bits) {
		return -1
	}
	return (8 - (n%8*bits)%8) % 8
}

// CheckRange returns an error wrapping ErrRange naming the first value of
// vals that does not fit in bits bits, or an error wrapping ErrWidth for a
// width outside 1..8.
func CheckRange(vals []uint8, bits int) error {
	if !validWidth(bits) {
		return fmt.Errorf("%w: got %d", ErrWidth, bits)
	}
	if bits == 8 {
		return nil
	}
	limit := uint8(1) << bits
	for i, v := range vals {
		if v >= limit {
			return fmt.Errorf("%w: element %d is %d, max %d for %d bits", ErrRange, i, v, limit-1, bits)
		}
	}
	return nil
}

// Pack appends the packed form of vals at the given width to dst and returns
// the extended slice. Only the low bits bits of each value are stored: higher
// bits are masked off, which is how a two's-complement int4 is written (pass
// uint8(int8(v))). Use PackInRange to reject out-of-range values instead.
// Pack panics if bits is outside 1..8, a programming error.
func Pack(dst []byte, vals []uint8, bits int) []byte {
	if !validWidth(bits) {
		panic(fmt.Sprintf("bitpack: Pack with bit width %d", bits))
	}
	dst, _ = pack(dst, vals, bits)
	return dst
}

// PackInRange is Pack for values that must fit in bits bits: it returns
// dst (its length unchanged) and CheckRange's error (wrapping ErrRange, naming the
// first value that does not fit, or ErrWidth) instead of masking. The
// range test rides along the packing, so it costs next to nothing.
func PackInRange(dst []byte, vals []uint8, bits int) ([]byte, error) {
	if !validWidth(bits) {
		return dst, fmt.Errorf("%w: got %d", ErrWidth, bits)
	}
	out, high := pack(dst, vals, bits)
	if high != 0 {
		return dst, CheckRange(vals, bits)
	}
	return out, nil
}

// lanes8 is 0x01 in each byte of a word.
const lanes8 = 0x0101_0101_0101_0101

// pack appends vals packed at bits (1..8, masked) to dst and returns the
// OR of every value's bits above the width (non-zero if any value is out
// of range). Eight values at a time are loaded as one little-endian word
// and their fields squeezed together in three shift-and-mask steps (bytes
// into 16-bit lanes, those into 32-bit lanes, those into the word), giving
// exactly bits bytes; a tail of fewer than eight goes through a bit
// accumulator. Every output byte is written, so dst's spare capacity need
// not be clear.
func pack(dst []byte, vals []uint8, bits int) ([]byte, uint64) {
	if bits == 8 {
		return append(dst, vals...), 0
	}
	start := len(dst)
	dst = grow(dst, PackedLen(len(vals), bits))
	out := dst[start:]
	b := uint(bits)
	low := (uint64(1)<<b - 1) * lanes8
	s1, s2, s3 := (8-b)&63, (16-2*b)&63, (32-4*b)&63
	var high uint64
	v := vals
	// Whole words whose 8-byte store stays inside out, then the rest of
	// the whole words byte by byte.
	for len(v) >= 8 && len(out) >= 8 {
		x := binary.LittleEndian.Uint64(v)
		high |= x &^ low
		x = squeeze(x&low, s1, s2, s3)
		binary.LittleEndian.PutUint64(out, x)
		v, out = v[8:], out[bits:]
	}
	for len(v) >= 8 {
		x := binary.LittleEndian.Uint64(v)
		high |= x &^ low
		x = squeeze(x&low, s1, s2, s3)
		for j := range out[:bits] {
			out[j] = byte(x >> (8 * j))
		}
		v, out = v[8:], out[bits:]
	}
	mask := uint64(1)<<b - 1
	var acc uint64 // pending bits, LSB first
	nacc := uint(0)
	for _, x := range v {
		high |= uint64(x) &^ mask
		acc |= (uint64(x) & mask) << nacc
		nacc += b
	}
	for o := 0; nacc > 0; o++ {
		out[o] = byte(acc)
		acc >>= 8
		nacc -= min(nacc, 8)
	}
	return dst, high
}

// squeeze packs the eight b-bit fields in the bytes of x into its low 8·b
// bits, given the shifts 8−b, 16−2b and 32−4b.
func squeeze(x uint64, s1, s2, s3 uint) uint64 {
	x = x&0x00ff_00ff_00ff_00ff | x&0xff00_ff00_ff00_ff00>>s1
	x = x&0x0000_ffff_0000_ffff | x&0xffff_0000_ffff_0000>>s2
	return x&0x0000_0000_ffff_ffff | x&0xffff_ffff_0000_0000>>s3
}

// grow extends dst by n bytes (not cleared when dst has the capacity: the
// caller writes every one).
func grow(dst []byte, n int) []byte {
	if cap(dst)-len(dst) >= n {
		return dst[:len(dst)+n]
	}
	return append(dst, make([]byte, n)...)
}

// Unpack decodes n elements of the given width from data and appends them to
// dst, returning the extended slice. data must hold at least PackedLen(n,
// bits) bytes; bytes beyond that, and the unused bits of the last byte, are
// ignored. It returns an error for a negative n, a width outside 1..8 or data
// that is too short.
func Unpack(dst []uint8, data []byte, n, bits int) ([]uint8, error) {
	if !validWidth(bits) {
		return dst, fmt.Errorf("%w: got %d", ErrWidth, bits)
	}
	if n < 0 {
		return dst, fmt.Errorf("bitpack: negative element count %d", n)
	}
	need := PackedLen(n, bits)
	if len(data) < need {
		return dst, fmt.Errorf("bitpack: %d %d-bit elements need %d bytes, have %d", n, bits, need, len(data))
	}
	data = data[:need]
	switch bits {
	case 8:
		return append(dst, data...), nil
	case 4:
		return unpack4(dst, data, n), nil
	}
	start := len(dst)
	dst = append(dst, make([]uint8, n)...)
	out := dst[start:]
	mask := uint64(1)<<bits - 1
	var acc uint64
	nacc := 0
	p := 0
	for i := range out {
		if nacc < bits {
			// Refill with up to 4 bytes; 32+7 pending bits fit in 64.
			for k := 0; k < 4 && p < len(data); k++ {
				acc |= uint64(data[p]) << nacc
				nacc += 8
				p++
			}
		}
		out[i] = uint8(acc & mask)
		acc >>= bits
		nacc -= bits
	}
	return dst, nil
}

// unpack4 is the 4-bit fast path of Unpack; data holds exactly
// PackedLen(n, 4) bytes.
func unpack4(dst []uint8, data []byte, n int) []uint8 {
	start := len(dst)
	dst = append(dst, make([]uint8, n)...)
	out := dst[start:]
	pairs := n / 2
	for j := 0; j < pairs; j++ {
		b := data[j]
		out[2*j] = b & 0x0f
		out[2*j+1] = b >> 4
	}
	if n%2 == 1 {
		out[n-1] = data[pairs] & 0x0f
	}
	return dst
}
