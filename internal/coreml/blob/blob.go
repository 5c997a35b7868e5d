// Package blob reads and writes Core ML "MIL blob storage v2" files, the
// weights/weight.bin of an ML Program package.
//
// Layout (all integers little-endian): a 64-byte header {count u32,
// version u32 = 2, 56 zero bytes}, then one record per blob: a 64-byte
// metadata record at a 64-byte-aligned offset {sentinel u32 0xDEADBEEF,
// dtype u32 (BlobDataType), sizeInBytes u64, data offset u64 (= record
// offset + 64), padding_size_in_bits u64, 32 zero bytes} followed directly
// by the data. Gaps before a record are zero bytes; the file ends right
// after the last blob's data. A program's BlobFileValue.offset is the offset
// of the metadata record, not of the data.
package blob

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Format constants.
const (
	// Version is the only storage version this package reads and writes.
	Version = 2
	// Sentinel starts every metadata record.
	Sentinel = 0xDEADBEEF
	// HeaderSize is the size of the file header.
	HeaderSize = 64
	// MetadataSize is the size of a blob metadata record.
	MetadataSize = 64
	// Alignment is the alignment of every metadata record (and so of every
	// blob's data).
	Alignment = 64
)

// ErrFormat is matched (errors.Is) by every error reporting a malformed or
// unsupported weight.bin.
var ErrFormat = errors.New("blob: malformed weight.bin")

// FormatError reports a malformed weight.bin: what is wrong and at which
// file offset.
type FormatError struct {
	Off int64  // file offset of the offending field or record
	Msg string // what is wrong
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("blob: malformed weight.bin at offset %d: %s", e.Off, e.Msg)
}

// Is makes errors.Is(err, ErrFormat) true for any *FormatError.
func (e *FormatError) Is(target error) bool { return target == ErrFormat }

func formatErr(off uint64, format string, args ...any) error {
	o := int64(off)
	if o < 0 {
		o = -1
	}
	return &FormatError{Off: o, Msg: fmt.Sprintf(format, args...)}
}

// Info describes one stored blob.
type Info struct {
	Offset     uint64 // offset of the metadata record (BlobFileValue.offset)
	DType      DType  // element type
	Size       uint64 // data length in bytes (packed length for sub-byte types)
	DataOffset uint64 // absolute offset of the data, Offset + 64
	PadBits    uint64 // unused bits in the last data byte (sub-byte types only)
	Elements   int64  // number of elements, derived from DType, Size and PadBits
}

// End returns the offset one past the blob's last data byte.
func (i Info) End() uint64 { return i.DataOffset + i.Size }

// align64 rounds x up to a multiple of 64; ok is false on overflow.
func align64(x uint64) (uint64, bool) {
	if x > ^uint64(0)-(Alignment-1) {
		return 0, false
	}
	return (x + Alignment - 1) &^ (Alignment - 1), true
}

// putHeader encodes the 64-byte file header.
func putHeader(b []byte, count uint32) {
	clear(b[:HeaderSize])
	binary.LittleEndian.PutUint32(b[0:], count)
	binary.LittleEndian.PutUint32(b[4:], Version)
}

// putMetadata encodes a 64-byte metadata record.
func putMetadata(b []byte, dt DType, size, dataOff, padBits uint64) {
	clear(b[:MetadataSize])
	binary.LittleEndian.PutUint32(b[0:], Sentinel)
	binary.LittleEndian.PutUint32(b[4:], uint32(dt))
	binary.LittleEndian.PutUint64(b[8:], size)
	binary.LittleEndian.PutUint64(b[16:], dataOff)
	binary.LittleEndian.PutUint64(b[24:], padBits)
}
