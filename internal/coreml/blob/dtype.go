package blob

import "strconv"

// DType is the BlobDataType stored in a blob's metadata record. Its values
// are NOT the MIL DataType enum values: Float16 is 1 here but 10 in MIL.
type DType uint32

// BlobDataType values (MILBlob StorageFormat, storage version 2).
const (
	Float16      DType = 1
	Float32      DType = 2
	UInt8        DType = 3
	Int8         DType = 4
	BFloat16     DType = 5
	Int16        DType = 6
	UInt16       DType = 7
	Int4         DType = 8
	UInt1        DType = 9
	UInt2        DType = 10
	UInt4        DType = 11
	UInt3        DType = 12
	UInt6        DType = 13
	Int32        DType = 14
	UInt32       DType = 15
	Float8E4M3FN DType = 16
	Float8E5M2   DType = 17
)

var dtypeInfo = [...]struct {
	name string
	bits int
}{
	Float16:      {"Float16", 16},
	Float32:      {"Float32", 32},
	UInt8:        {"UInt8", 8},
	Int8:         {"Int8", 8},
	BFloat16:     {"BFloat16", 16},
	Int16:        {"Int16", 16},
	UInt16:       {"UInt16", 16},
	Int4:         {"Int4", 4},
	UInt1:        {"UInt1", 1},
	UInt2:        {"UInt2", 2},
	UInt4:        {"UInt4", 4},
	UInt3:        {"UInt3", 3},
	UInt6:        {"UInt6", 6},
	Int32:        {"Int32", 32},
	UInt32:       {"UInt32", 32},
	Float8E4M3FN: {"Float8E4M3FN", 8},
	Float8E5M2:   {"Float8E5M2", 8},
}

// Valid reports whether d is one of the known BlobDataType values.
func (d DType) Valid() bool {
	return d != 0 && uint64(d) < uint64(len(dtypeInfo))
}

// String returns the BlobDataType name ("Float16", "UInt6", ...) or
// "DType(n)" for an unknown value.
func (d DType) String() string {
	if !d.Valid() {
		return "DType(" + strconv.FormatUint(uint64(d), 10) + ")"
	}
	return dtypeInfo[d].name
}

// Bits returns the storage width of one element in bits (1 to 32), or 0
// for an unknown value.
func (d DType) Bits() int {
	if !d.Valid() {
		return 0
	}
	return dtypeInfo[d].bits
}

// SubByte reports whether elements of d are narrower than a byte and so
// are bit-packed, with padding bits recorded in the metadata.
func (d DType) SubByte() bool {
	b := d.Bits()
	return b > 0 && b < 8
}

// PackedSize returns the number of bytes n elements of d occupy,
// ceil(n·Bits/8), and the number of unused bits in the last byte
// ((8 − n·Bits mod 8) mod 8, always 0 for byte-sized types). It returns
// ok=false for an unknown dtype, a negative n or a size that overflows int64.
func (d DType) PackedSize(n int64) (size int64, padBits int, ok bool) {
	bits := int64(d.Bits())
	if bits == 0 || n < 0 || n > (1<<63-1-7)/bits {
		return 0, 0, false
	}
	total := n * bits
	return (total + 7) / 8, int((8 - total%8) % 8), true
}
