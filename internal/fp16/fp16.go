// Package fp16 converts between IEEE-754 binary16 (half), bfloat16 and
// float32 with round-to-nearest-even, the rounding Core ML and PyTorch use.
package fp16

import "math"

// Bits is an IEEE-754 binary16 value stored as its 16-bit pattern.
type Bits uint16

// MaxFinite is the largest finite half value, 65504.
const MaxFinite = 65504.0

// FromFloat32 rounds f to the nearest half value (ties to even). Values
// beyond the half range become ±Inf; NaN stays NaN (quiet).
func FromFloat32(f float32) Bits {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	mant := b & 0x7fffff
	if exp == 0xff { // Inf or NaN
		if mant != 0 {
			return Bits(sign | 0x7e00 | uint16(mant>>13))
		}
		return Bits(sign | 0x7c00)
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return Bits(sign | 0x7c00)
	}
	if e <= 0 {
		// Subnormal half (or zero): shift the implicit-1 mantissa.
		if e < -10 {
			return Bits(sign)
		}
		m := mant | 0x800000
		shift := uint32(14 - e)
		half := uint32(1) << (shift - 1)
		r := m >> shift
		rem := m & ((1 << shift) - 1)
		if rem > half || (rem == half && r&1 == 1) {
			r++
		}
		return Bits(sign | uint16(r))
	}
	r := uint32(e)<<10 | mant>>13
	rem := mant & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && r&1 == 1) {
		r++ // may carry into the exponent, up to Inf: that is correct
	}
	return Bits(sign | uint16(r))
}

// FromFloat64 rounds x to the nearest half value (ties to even) in one
// step, without the double rounding of going through float32. Values beyond
// the half range become ±Inf; NaN stays NaN (quiet).
func FromFloat64(x float64) Bits {
	b := math.Float64bits(x)
	sign := uint16(b>>48) & 0x8000
	exp := int64(b>>52) & 0x7ff
	mant := b & (1<<52 - 1)
	if exp == 0x7ff { // Inf or NaN
		if mant != 0 {
			return Bits(sign | 0x7e00 | uint16(mant>>42))
		}
		return Bits(sign | 0x7c00)
	}
	e := exp - 1023 + 15
	if e >= 0x1f {
		return Bits(sign | 0x7c00)
	}
	shift := uint64(42) // 52 mantissa bits down to 10
	m := mant
	if e <= 0 {
		// Subnormal half (or zero): shift the implicit-1 mantissa further.
		if e < -10 {
			return Bits(sign)
		}
		m |= 1 << 52
		shift = uint64(43 - e)
	} else {
		m |= uint64(e) << 52 // exponent rides above the mantissa; a carry rounds up into it
	}
	half := uint64(1) << (shift - 1)
	r := m >> shift
	rem := m & (1<<shift - 1)
	if rem > half || (rem == half && r&1 == 1) {
		r++ // may carry into the exponent, up to Inf: that is correct
	}
	return Bits(sign | uint16(r))
}

// Float32 widens h exactly to float32.
func (h Bits) Float32() float32 { return table[h] }

// ToFloat32 widens h exactly to float32 without the lookup table.
func ToFloat32(h Bits) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp == 0:
		if mant == 0 {
			return math.Float32frombits(sign)
		}
		// Subnormal: normalise.
		e := uint32(127 - 15 + 1)
		for mant&0x400 == 0 {
			mant <<= 1
			e--
		}
		mant &= 0x3ff
		return math.Float32frombits(sign | e<<23 | mant<<13)
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
}

var table = func() *[1 << 16]float32 {
	var t [1 << 16]float32
	for i := range t {
		t[i] = ToFloat32(Bits(i))
	}
	return &t
}()

// Round rounds f to the nearest half value and returns it as float32.
func Round(f float32) float32 { return table[FromFloat32(f)] }

// IsInf reports whether h is ±Inf.
func (h Bits) IsInf() bool { return h&0x7fff == 0x7c00 }

// IsNaN reports whether h is a NaN.
func (h Bits) IsNaN() bool { return h&0x7c00 == 0x7c00 && h&0x3ff != 0 }

// BF16ToFloat32 widens a bfloat16 bit pattern exactly to float32.
func BF16ToFloat32(b uint16) float32 { return math.Float32frombits(uint32(b) << 16) }

// Float32ToBF16 rounds f to bfloat16 (ties to even).
func Float32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 { // NaN
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// EncodeFloat32s rounds src to half and writes little-endian bytes to dst,
// which must hold 2*len(src) bytes. It returns the number of values that
// overflowed to ±Inf (finite inputs beyond the half range).
func EncodeFloat32s(dst []byte, src []float32) (overflow int) {
	_ = dst[2*len(src)-1:]
	for i, f := range src {
		h := FromFloat32(f)
		if h.IsInf() && !math.IsInf(float64(f), 0) {
			overflow++
		}
		dst[2*i] = byte(h)
		dst[2*i+1] = byte(h >> 8)
	}
	return overflow
}

// DecodeFloat32s widens little-endian half bytes from src into dst, which
// must hold len(src)/2 values.
func DecodeFloat32s(dst []float32, src []byte) {
	n := len(src) / 2
	_ = dst[:n]
	for i := 0; i < n; i++ {
		dst[i] = table[uint16(src[2*i])|uint16(src[2*i+1])<<8]
	}
}
