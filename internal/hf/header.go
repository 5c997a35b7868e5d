package hf

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"sort"
)

// DType is a safetensors element type.
type DType uint8

// The safetensors element types. Only F32, F16 and BF16 convert to floats;
// the others can be read as raw bytes.
const (
	DTypeInvalid DType = iota
	BOOL
	U8
	I8
	I16
	U16
	F16
	BF16
	I32
	U32
	F32
	F64
	I64
	U64
	F8E4M3
	F8E5M2
)

var dtypeNames = [...]string{
	DTypeInvalid: "invalid",
	BOOL:         "BOOL",
	U8:           "U8",
	I8:           "I8",
	I16:          "I16",
	U16:          "U16",
	F16:          "F16",
	BF16:         "BF16",
	I32:          "I32",
	U32:          "U32",
	F32:          "F32",
	F64:          "F64",
	I64:          "I64",
	U64:          "U64",
	F8E4M3:       "F8_E4M3",
	F8E5M2:       "F8_E5M2",
}

var dtypeSizes = [...]int64{
	BOOL: 1, U8: 1, I8: 1, I16: 2, U16: 2, F16: 2, BF16: 2, I32: 4, U32: 4,
	F32: 4, F64: 8, I64: 8, U64: 8, F8E4M3: 1, F8E5M2: 1,
}

// String returns the safetensors spelling of d, such as "BF16".
func (d DType) String() string {
	if int(d) < len(dtypeNames) {
		return dtypeNames[d]
	}
	return fmt.Sprintf("DType(%d)", uint8(d))
}

// Size returns the size of one element in bytes, 0 for an invalid DType.
func (d DType) Size() int64 {
	if d == DTypeInvalid || int(d) >= len(dtypeSizes) {
		return 0
	}
	return dtypeSizes[d]
}

// ParseDType returns the DType spelled name in a safetensors header.
func ParseDType(name string) (DType, error) {
	for i, n := range dtypeNames {
		if i != int(DTypeInvalid) && n == name {
			return DType(i), nil
		}
	}
	return DTypeInvalid, fmt.Errorf("hf: dtype %q: %w", name, ErrUnsupported)
}

// TensorInfo describes one tensor of a safetensors file.
type TensorInfo struct {
	Name  string
	DType DType
	Shape []int64
	File  string // path of the file holding the tensor
	// Offset is the absolute byte offset of the data in File; Size its length.
	Offset, Size int64
}

// NumElements returns the product of the shape (1 for a scalar).
func (t TensorInfo) NumElements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// MaxHeaderSize caps the JSON header of a safetensors file (100 MiB, as the
// reference implementation does).
const MaxHeaderSize = 100 << 20

// FormatError reports a malformed safetensors or index file.
type FormatError struct {
	File string
	Msg  string
}

func (e *FormatError) Error() string { return "hf: " + e.File + ": " + e.Msg }

// Header is the parsed header of one safetensors file.
type Header struct {
	Tensors  []TensorInfo // sorted by name
	Metadata map[string]string
	// DataOffset is where the data section starts (8 + header length).
	DataOffset int64
}

// ReadHeader reads and validates the header of a safetensors file of the
// given size from r. file names the file in errors and in TensorInfo.File.
func ReadHeader(r io.ReaderAt, size int64, file string) (*Header, error) {
	var lenBuf [8]byte
	if size < 8 {
		return nil, &FormatError{file, fmt.Sprintf("file is %d bytes, too short for a header", size)}
	}
	if _, err := r.ReadAt(lenBuf[:], 0); err != nil {
		return nil, fmt.Errorf("hf: %s: read header length: %w", file, err)
	}
	n, err := headerLen(binary.LittleEndian.Uint64(lenBuf[:]), size, file)
	if err != nil {
		return nil, err
	}
	hdr := make([]byte, n)
	if _, err := r.ReadAt(hdr, 8); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("hf: %s: read header: %w", file, err)
	}
	return parseHeader(hdr, size-8-n, file)
}

func headerLen(n uint64, size int64, file string) (int64, error) {
	if n < 2 || n > MaxHeaderSize || n > uint64(size-8) {
		return 0, &FormatError{file, fmt.Sprintf("header length %d is not within [2, min(%d, file size %d - 8)]",
			n, MaxHeaderSize, size)}
	}
	return int64(n), nil
}

// ParseFile validates a whole safetensors file held in memory.
func ParseFile(b []byte, file string) (*Header, error) {
	if len(b) < 8 {
		return nil, &FormatError{file, fmt.Sprintf("file is %d bytes, too short for a header", len(b))}
	}
	n, err := headerLen(binary.LittleEndian.Uint64(b), int64(len(b)), file)
	if err != nil {
		return nil, err
	}
	return parseHeader(b[8:8+n], int64(len(b))-8-n, file)
}

// parseHeader parses the JSON header hdr of a file whose data section is
// dataLen bytes long.
func parseHeader(hdr []byte, dataLen int64, file string) (*Header, error) {
	ferr := func(format string, a ...any) error {
		return &FormatError{file, fmt.Sprintf(format, a...)}
	}
	dec := json.NewDecoder(bytes.NewReader(hdr))
	tok, err := dec.Token()
	if err != nil {
		return nil, ferr("header is not JSON: %v", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, ferr("header is not a JSON object")
	}
	h := &Header{DataOffset: 8 + int64(len(hdr))}
	seen := make(map[string]bool)
	type span struct {
		begin, end int64
		name       string
	}
	var spans []span
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, ferr("header is not JSON: %v", err)
		}
		name, ok := tok.(string)
		if !ok {
			return nil, ferr("header key is not a string")
		}
		if name == "" {
			return nil, ferr("header has an empty tensor name")
		}
		if seen[name] {
			return nil, ferr("header names %q twice", name)
		}
		seen[name] = true
		if name == "__metadata__" {
			if err := dec.Decode(&h.Metadata); err != nil {
				return nil, ferr("__metadata__ is not a string map: %v", err)
			}
			continue
		}
		// Keys are matched exactly (encoding/json alone would fold case).
		var fields map[string]json.RawMessage
		if err := dec.Decode(&fields); err != nil {
			return nil, ferr("tensor %q: %v", name, err)
		}
		var dtName string
		var shape, offs []int64
		for _, f := range []struct {
			key string
			dst any
		}{{"dtype", &dtName}, {"shape", &shape}, {"data_offsets", &offs}} {
			raw, ok := fields[f.key]
			if !ok || isNull(raw) {
				return nil, ferr("tensor %q: dtype, shape and data_offsets are required", name)
			}
			if err := json.Unmarshal(raw, f.dst); err != nil {
				return nil, ferr("tensor %q: %s: %v", name, f.key, err)
			}
		}
		dt, err := ParseDType(dtName)
		if err != nil {
			return nil, fmt.Errorf("hf: %s: tensor %q: %w", file, name, err)
		}
		if len(offs) != 2 {
			return nil, ferr("tensor %q: data_offsets has %d entries, want 2", name, len(offs))
		}
		begin, end := offs[0], offs[1]
		if begin < 0 || begin > end || end > dataLen {
			return nil, ferr("tensor %q: data_offsets [%d, %d] not within the %d-byte data section",
				name, begin, end, dataLen)
		}
		count := uint64(1)
		overflow := false
		for _, d := range shape {
			if d < 0 {
				return nil, ferr("tensor %q: negative dimension in shape %v", name, shape)
			}
			hi, lo := bits.Mul64(count, uint64(d))
			overflow = overflow || hi != 0
			count = lo
		}
		hi, want := bits.Mul64(count, uint64(dt.Size()))
		if overflow || hi != 0 || want > math.MaxInt64 || int64(want) != end-begin {
			return nil, ferr("tensor %q: %d data bytes do not match shape %v of %s", name, end-begin, shape, dt)
		}
		h.Tensors = append(h.Tensors, TensorInfo{
			Name: name, DType: dt, Shape: shape, File: file,
			Offset: h.DataOffset + begin, Size: end - begin,
		})
		if end > begin {
			spans = append(spans, span{begin, end, name})
		}
	}
	if _, err := dec.Token(); err != nil {
		return nil, ferr("header is not JSON: %v", err)
	}
	// Only padding (spaces) may follow the object.
	off := min(dec.InputOffset(), int64(len(hdr)))
	if len(bytes.Trim(hdr[off:], " \t\r\n\x00")) != 0 {
		return nil, ferr("trailing data after the header object")
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].begin < spans[j].begin })
	for i := 1; i < len(spans); i++ {
		if spans[i].begin < spans[i-1].end {
			return nil, ferr("tensors %q and %q overlap", spans[i-1].name, spans[i].name)
		}
	}
	sort.Slice(h.Tensors, func(i, j int) bool { return h.Tensors[i].Name < h.Tensors[j].Name })
	return h, nil
}
