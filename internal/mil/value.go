package mil

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/anemll/anemll/internal/fp16"
)

// Storage says where a constant tensor is kept when a program is written.
type Storage uint8

// Storage choices.
const (
	// StorageAuto lets the writer decide with coremltools' rule (see
	// Value.WantsBlob).
	StorageAuto Storage = iota
	// StorageImmediate keeps the value inline in the protobuf.
	StorageImmediate
	// StorageBlob puts the value in weights/weight.bin.
	StorageBlob
)

// Value is a constant: a tensor (immediate or stored in the weight file), or
// a tuple, list or dictionary of values.
//
// Tensor payloads are canonical little-endian element bytes in Data: 2 bytes
// per fp16, 4 per fp32/int32, one byte (0 or 1) per bool, and bit-packed
// LSB-first for sub-byte types. String tensors use Strings. A large tensor
// may instead have a Source that produces its bytes when they are needed,
// so gigabytes of weights need not be in memory at once.
type Value struct {
	Type    Type
	Data    []byte
	Strings []string
	Source  func() ([]byte, error)
	// Elems holds the members of a tuple or list value.
	Elems []*Value
	// Entries holds the pairs of a dictionary value.
	Entries []DictEntry
	// Storage says where the writer stores a tensor.
	Storage Storage
	// BlobFile and BlobOffset record where a value read from a package was
	// stored (the offset of its blob metadata record). Writers use them only
	// to keep an existing layout.
	BlobFile   string
	BlobOffset uint64
}

// DictEntry is one key/value pair of a dictionary value.
type DictEntry struct{ Key, Value *Value }

// DefaultBlobFile is the weight file name every Core ML package uses.
const DefaultBlobFile = "@model_path/weights/weight.bin"

// NewTensor returns a tensor value of dt and shape holding data (canonical
// bytes, see Value). It does not copy data.
func NewTensor(dt DType, shape []int64, data []byte) *Value {
	return &Value{Type: TensorType(dt, shape...), Data: data}
}

// LazyTensor returns a tensor value whose bytes are produced by src when a
// writer or interpreter needs them.
func LazyTensor(dt DType, shape []int64, src func() ([]byte, error)) *Value {
	return &Value{Type: TensorType(dt, shape...), Source: src}
}

// FP16 returns an fp16 tensor from half bit patterns.
func FP16(shape []int64, h []uint16) *Value {
	b := make([]byte, 2*len(h))
	for i, x := range h {
		binary.LittleEndian.PutUint16(b[2*i:], x)
	}
	return NewTensor(Float16, shape, b)
}

// FP16FromFloat32 returns an fp16 tensor, rounding f to half (nearest even).
func FP16FromFloat32(shape []int64, f []float32) *Value {
	b := make([]byte, 2*len(f))
	fp16.EncodeFloat32s(b, f)
	return NewTensor(Float16, shape, b)
}

// Float32s returns an fp32 tensor.
func Float32s(shape []int64, f []float32) *Value {
	b := make([]byte, 4*len(f))
	for i, x := range f {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return NewTensor(Float32, shape, b)
}

// Int32s returns an int32 tensor.
func Int32s(shape []int64, v []int32) *Value {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], uint32(x))
	}
	return NewTensor(Int32, shape, b)
}

// Bools returns a bool tensor.
func Bools(shape []int64, v []bool) *Value {
	b := make([]byte, len(v))
	for i, x := range v {
		if x {
			b[i] = 1
		}
	}
	return NewTensor(Bool, shape, b)
}

// Int32Vec returns a rank-1 int32 tensor of v.
func Int32Vec(v ...int32) *Value { return Int32s([]int64{int64(len(v))}, v) }

// BoolVec returns a rank-1 bool tensor of v.
func BoolVec(v ...bool) *Value { return Bools([]int64{int64(len(v))}, v) }

// ScalarInt32 returns an int32 scalar.
func ScalarInt32(v int32) *Value { return Int32s(nil, []int32{v}) }

// ScalarFP16 returns an fp16 scalar (v rounded to half).
func ScalarFP16(v float32) *Value { return FP16FromFloat32(nil, []float32{v}) }

// ScalarFloat32 returns an fp32 scalar.
func ScalarFloat32(v float32) *Value { return Float32s(nil, []float32{v}) }

// ScalarBool returns a bool scalar.
func ScalarBool(v bool) *Value { return Bools(nil, []bool{v}) }

// ScalarString returns a string scalar.
func ScalarString(s string) *Value {
	return &Value{Type: ScalarType(String), Strings: []string{s}}
}

// Bytes returns the canonical bytes of a tensor value, calling its Source
// if the bytes are not held in memory. The result must not be modified.
func (v *Value) Bytes() ([]byte, error) {
	if v.Data != nil || v.Source == nil {
		return v.Data, nil
	}
	b, err := v.Source()
	if err != nil {
		return nil, fmt.Errorf("mil: produce %s value: %w", v.Type, err)
	}
	return b, nil
}

// CheckSize reports an error if a tensor value's byte count does not match
// its type. Lazy values are checked only when their bytes are produced.
func (v *Value) CheckSize(data []byte) error {
	t := v.Type
	if t.Kind != KindTensor {
		return nil
	}
	n := t.NumElements()
	if n < 0 {
		return fmt.Errorf("mil: constant of type %s has unknown dimensions", t)
	}
	if t.DType == String {
		if int64(len(v.Strings)) != n {
			return fmt.Errorf("mil: %s constant has %d strings", t, len(v.Strings))
		}
		return nil
	}
	if want := t.DType.ByteLen(n); int64(len(data)) != want {
		return fmt.Errorf("mil: %s constant has %d bytes, want %d", t, len(data), want)
	}
	return nil
}

// WantsBlob reports whether coremltools would store this constant in the
// weight file: a tensor of at least 10 elements whose dtype is fp16, fp32,
// (u)int8, (u)int16, (u)int32 or a sub-byte integer type (spec 9 rule).
// An explicit Storage overrides the rule.
func (v *Value) WantsBlob() bool {
	switch v.Storage {
	case StorageBlob:
		return true
	case StorageImmediate:
		return false
	}
	t := v.Type
	if t.Kind != KindTensor || t.NumElements() < 10 {
		return false
	}
	switch t.DType {
	case Float16, Float32, UInt8, Int8, Int16, UInt16, Int32, UInt32,
		Int4, UInt1, UInt2, UInt3, UInt4, UInt6:
		return true
	}
	return false
}

// Ints returns the elements of an integer or bool tensor value as int64.
func (v *Value) Ints() ([]int64, error) {
	b, err := v.Bytes()
	if err != nil {
		return nil, err
	}
	if err := v.CheckSize(b); err != nil {
		return nil, err
	}
	n := int(v.Type.NumElements())
	out := make([]int64, n)
	switch v.Type.DType {
	case Int32:
		for i := range out {
			out[i] = int64(int32(binary.LittleEndian.Uint32(b[4*i:])))
		}
	case UInt32:
		for i := range out {
			out[i] = int64(binary.LittleEndian.Uint32(b[4*i:]))
		}
	case Int64, UInt64:
		for i := range out {
			out[i] = int64(binary.LittleEndian.Uint64(b[8*i:]))
		}
	case Int16:
		for i := range out {
			out[i] = int64(int16(binary.LittleEndian.Uint16(b[2*i:])))
		}
	case UInt16:
		for i := range out {
			out[i] = int64(binary.LittleEndian.Uint16(b[2*i:]))
		}
	case Int8:
		for i := range out {
			out[i] = int64(int8(b[i]))
		}
	case UInt8, Bool:
		for i := range out {
			out[i] = int64(b[i])
		}
	default:
		if !v.Type.DType.SubByte() {
			return nil, fmt.Errorf("mil: %s value is not an integer tensor", v.Type)
		}
		bits := v.Type.DType.Bits()
		for i := range out {
			var x uint64
			for k := 0; k < bits; k++ {
				bit := i*bits + k
				x |= uint64(b[bit/8]>>(bit%8)&1) << k
			}
			if v.Type.DType == Int4 && x&8 != 0 {
				out[i] = int64(x) - 16
			} else {
				out[i] = int64(x)
			}
		}
	}
	return out, nil
}

// Floats returns the elements of a numeric tensor value as float32.
func (v *Value) Floats() ([]float32, error) {
	switch v.Type.DType {
	case Float16, Float32, Float64, BFloat16:
	default:
		ints, err := v.Ints()
		if err != nil {
			return nil, err
		}
		out := make([]float32, len(ints))
		for i, x := range ints {
			out[i] = float32(x)
		}
		return out, nil
	}
	b, err := v.Bytes()
	if err != nil {
		return nil, err
	}
	if err := v.CheckSize(b); err != nil {
		return nil, err
	}
	n := int(v.Type.NumElements())
	out := make([]float32, n)
	switch v.Type.DType {
	case Float16:
		fp16.DecodeFloat32s(out, b)
	case Float32:
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
	case Float64:
		for i := range out {
			out[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:])))
		}
	case BFloat16:
		for i := range out {
			out[i] = fp16.BF16ToFloat32(binary.LittleEndian.Uint16(b[2*i:]))
		}
	}
	return out, nil
}

// Str returns the single string of a string scalar.
func (v *Value) Str() (string, bool) {
	if v.Type.Kind != KindTensor || v.Type.DType != String || len(v.Strings) != 1 {
		return "", false
	}
	return v.Strings[0], true
}
