// Package mil models Core ML "ML Program" (MIL) programs in memory: value
// types, constant values, operations, blocks, functions and programs, with a
// builder that checks programs as they are made and a text printer.
//
// The model mirrors the MILSpec protobuf closely enough that a package read
// from disk and written back is unchanged, but it knows nothing about
// protobuf or files: internal/coreml converts between the two.
package mil

import "fmt"

// DType is a MIL element data type. Its values are those of the MILSpec
// DataType protobuf enum.
type DType int32

// MIL data types.
const (
	Invalid    DType = 0
	Bool       DType = 1
	String     DType = 2
	Float16    DType = 10
	Float32    DType = 11
	Float64    DType = 12
	BFloat16   DType = 13
	Float8E4M3 DType = 40
	Float8E5M2 DType = 41
	Int8       DType = 21
	Int16      DType = 22
	Int32      DType = 23
	Int64      DType = 24
	Int4       DType = 25
	UInt8      DType = 31
	UInt16     DType = 32
	UInt32     DType = 33
	UInt64     DType = 34
	UInt4      DType = 35
	UInt2      DType = 36
	UInt1      DType = 37
	UInt6      DType = 38
	UInt3      DType = 39
)

var dtypeInfo = map[DType]struct {
	name string
	bits int
}{
	Bool: {"bool", 8}, String: {"string", 0},
	Float16: {"fp16", 16}, Float32: {"fp32", 32}, Float64: {"fp64", 64}, BFloat16: {"bf16", 16},
	Float8E4M3: {"fp8e4m3fn", 8}, Float8E5M2: {"fp8e5m2", 8},
	Int8: {"int8", 8}, Int16: {"int16", 16}, Int32: {"int32", 32}, Int64: {"int64", 64}, Int4: {"int4", 4},
	UInt8: {"uint8", 8}, UInt16: {"uint16", 16}, UInt32: {"uint32", 32}, UInt64: {"uint64", 64},
	UInt4: {"uint4", 4}, UInt2: {"uint2", 2}, UInt1: {"uint1", 1}, UInt6: {"uint6", 6}, UInt3: {"uint3", 3},
}

// String returns the MIL spelling of d ("fp16", "int32", "uint4", ...).
func (d DType) String() string {
	if i, ok := dtypeInfo[d]; ok {
		return i.name
	}
	return fmt.Sprintf("dtype(%d)", int32(d))
}

// Valid reports whether d is a known data type.
func (d DType) Valid() bool { _, ok := dtypeInfo[d]; return ok }

// Bits returns the storage width of one element in bits (8 for bool, 0 for
// string).
func (d DType) Bits() int { return dtypeInfo[d].bits }

// SubByte reports whether elements are narrower than a byte and bit-packed.
func (d DType) SubByte() bool { b := d.Bits(); return b > 0 && b < 8 }

// IsFloat reports whether d is a floating-point type.
func (d DType) IsFloat() bool {
	switch d {
	case Float16, Float32, Float64, BFloat16, Float8E4M3, Float8E5M2:
		return true
	}
	return false
}

// IsInt reports whether d is a (signed or unsigned) integer type.
func (d DType) IsInt() bool {
	switch d {
	case Int8, Int16, Int32, Int64, Int4, UInt8, UInt16, UInt32, UInt64, UInt4, UInt2, UInt1, UInt6, UInt3:
		return true
	}
	return false
}

// ParseDType returns the data type spelled s ("fp16", "int32", ...).
func ParseDType(s string) (DType, bool) {
	for d, i := range dtypeInfo {
		if i.name == s {
			return d, true
		}
	}
	return Invalid, false
}

// ByteLen returns the number of bytes n elements of d occupy when stored
// (bit-packed for sub-byte types).
func (d DType) ByteLen(n int64) int64 {
	return (n*int64(d.Bits()) + 7) / 8
}
