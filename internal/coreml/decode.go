package coreml

import (
	"encoding/binary"
	"fmt"
	"math"
	"sort"

	"github.com/anemll/anemll/internal/coreml/spec"
	"github.com/anemll/anemll/internal/coreml/spec/milspec"
	"github.com/anemll/anemll/internal/mil"
)

// BlobSource produces the bytes of the blob whose metadata record is at
// offset in the weight file named file.
type BlobSource func(file string, offset uint64, dt mil.DType, n int64) ([]byte, error)

// FromSpec converts a decoded Model message into a Package. Blob-backed
// constants get a Source that calls blobs (which may be nil when weights
// will not be read).
func FromSpec(m *spec.Model, blobs BlobSource) (*Package, error) {
	prog := m.GetMlProgram()
	if prog == nil {
		return nil, fmt.Errorf("coreml: model is not an ML Program (only mlProgram models are supported)")
	}
	d := &decoder{blobs: blobs, shared: map[sharedBlob]*mil.Value{}}
	pkg := &Package{SpecVersion: m.GetSpecificationVersion()}
	desc, err := descriptionFromSpec(m.GetDescription())
	if err != nil {
		return nil, err
	}
	pkg.Description = desc
	p, err := d.program(prog)
	if err != nil {
		return nil, err
	}
	pkg.Program = p
	return pkg, nil
}

type decoder struct {
	blobs BlobSource
	// shared holds one Value per weight-file blob, so every reference to
	// the same blob (within a function or across functions) gets the same
	// *mil.Value and consumers can share what they derive from it.
	shared map[sharedBlob]*mil.Value
}

type sharedBlob struct {
	file string
	off  uint64
	typ  string
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (d *decoder) program(pp *milspec.Program) (*mil.Program, error) {
	p := &mil.Program{Version: pp.GetVersion(), DocString: pp.GetDocString()}
	for _, k := range sortedKeys(pp.GetAttributes()) {
		v, err := d.value(pp.GetAttributes()[k])
		if err != nil {
			return nil, fmt.Errorf("coreml: program attribute %q: %w", k, err)
		}
		p.Attrs = append(p.Attrs, mil.Attr{Name: k, Value: v})
	}
	for _, name := range sortedKeys(pp.GetFunctions()) {
		f, err := d.function(name, pp.GetFunctions()[name])
		if err != nil {
			return nil, err
		}
		p.Functions = append(p.Functions, f)
	}
	return p, nil
}

func (d *decoder) function(name string, pf *milspec.Function) (*mil.Function, error) {
	f := &mil.Function{Name: name, Opset: pf.GetOpset()}
	if len(pf.GetAttributes()) != 0 {
		return nil, fmt.Errorf("coreml: function %q has attributes (not supported)", name)
	}
	specs := pf.GetBlockSpecializations()
	if len(specs) != 1 || specs[f.Opset] == nil {
		return nil, fmt.Errorf("coreml: function %q must have exactly one block, specialised for its opset %q (has %v)", name, f.Opset, sortedKeys(specs))
	}
	for _, in := range pf.GetInputs() {
		nt, err := namedType(in)
		if err != nil {
			return nil, fmt.Errorf("coreml: function %q: %w", name, err)
		}
		f.Inputs = append(f.Inputs, nt)
	}
	b, err := d.block(specs[f.Opset])
	if err != nil {
		return nil, fmt.Errorf("coreml: function %q: %w", name, err)
	}
	f.Body = b
	return f, nil
}

func namedType(nv *milspec.NamedValueType) (mil.NamedType, error) {
	t, err := valueType(nv.GetType())
	if err != nil {
		return mil.NamedType{}, fmt.Errorf("%q: %w", nv.GetName(), err)
	}
	return mil.NamedType{Name: nv.GetName(), Type: t}, nil
}

func (d *decoder) block(pb *milspec.Block) (*mil.Block, error) {
	if len(pb.GetAttributes()) != 0 {
		return nil, fmt.Errorf("block attributes are not supported")
	}
	b := &mil.Block{Outputs: append([]string(nil), pb.GetOutputs()...)}
	for _, in := range pb.GetInputs() {
		nt, err := namedType(in)
		if err != nil {
			return nil, err
		}
		b.Inputs = append(b.Inputs, nt)
	}
	for i, po := range pb.GetOperations() {
		op, err := d.op(po)
		if err != nil {
			return nil, fmt.Errorf("op %d (%s): %w", i, po.GetType(), err)
		}
		b.Ops = append(b.Ops, op)
	}
	return b, nil
}

func (d *decoder) op(po *milspec.Operation) (*mil.Op, error) {
	op := &mil.Op{Type: po.GetType()}
	attrs := po.GetAttributes()
	if nv := attrs["name"]; nv != nil {
		v, err := d.value(nv)
		if err != nil {
			return nil, fmt.Errorf("name attribute: %w", err)
		}
		s, ok := v.Str()
		if !ok {
			return nil, fmt.Errorf("name attribute is not a string scalar")
		}
		op.Name = s
	}
	for _, k := range sortedKeys(attrs) {
		if k == "name" {
			continue
		}
		v, err := d.value(attrs[k])
		if err != nil {
			return nil, fmt.Errorf("%q attribute %q: %w", op.Name, k, err)
		}
		op.Attrs = append(op.Attrs, mil.Attr{Name: k, Value: v})
	}
	for _, k := range sortedKeys(po.GetInputs()) {
		in := mil.Input{Param: k}
		for _, b := range po.GetInputs()[k].GetArguments() {
			switch x := b.GetBinding().(type) {
			case *milspec.Argument_Binding_Name:
				in.Args = append(in.Args, mil.Arg{Name: x.Name})
			case *milspec.Argument_Binding_Value:
				v, err := d.value(x.Value)
				if err != nil {
					return nil, fmt.Errorf("%q input %q: %w", op.Name, k, err)
				}
				in.Args = append(in.Args, mil.Arg{Value: v})
			default:
				return nil, fmt.Errorf("%q input %q has an empty binding", op.Name, k)
			}
		}
		op.Inputs = append(op.Inputs, in)
	}
	mil.SortInputs(op.Type, op.Inputs)
	for _, o := range po.GetOutputs() {
		nt, err := namedType(o)
		if err != nil {
			return nil, fmt.Errorf("%q output: %w", op.Name, err)
		}
		op.Outputs = append(op.Outputs, nt)
	}
	for _, pb := range po.GetBlocks() {
		b, err := d.block(pb)
		if err != nil {
			return nil, err
		}
		op.Blocks = append(op.Blocks, b)
	}
	return op, nil
}

// maxRank bounds tensor ranks we accept from files.
const maxRank = 16

func valueType(vt *milspec.ValueType) (mil.Type, error) {
	switch x := vt.GetType().(type) {
	case *milspec.ValueType_TensorType:
		tt := x.TensorType
		if len(tt.GetAttributes()) != 0 {
			return mil.Type{}, fmt.Errorf("tensor type attributes are not supported")
		}
		t := mil.Type{Kind: mil.KindTensor, DType: mil.DType(tt.GetDataType())}
		if !t.DType.Valid() {
			return mil.Type{}, fmt.Errorf("unknown data type %d", tt.GetDataType())
		}
		if tt.GetRank() < 0 {
			t.VariableRank = true
			return t, nil
		}
		if tt.GetRank() > maxRank || int64(len(tt.GetDimensions())) != tt.GetRank() {
			return mil.Type{}, fmt.Errorf("tensor rank %d with %d dimensions", tt.GetRank(), len(tt.GetDimensions()))
		}
		t.Shape = make([]int64, 0, len(tt.GetDimensions()))
		for _, dim := range tt.GetDimensions() {
			switch dd := dim.GetDimension().(type) {
			case *milspec.Dimension_Constant:
				sz := dd.Constant.GetSize()
				if sz > math.MaxInt32*64 {
					return mil.Type{}, fmt.Errorf("dimension %d is too large", sz)
				}
				t.Shape = append(t.Shape, int64(sz))
			case *milspec.Dimension_Unknown:
				if dd.Unknown.GetVariadic() {
					return mil.Type{}, fmt.Errorf("variadic dimensions are not supported")
				}
				t.Shape = append(t.Shape, mil.Unknown)
			default:
				return mil.Type{}, fmt.Errorf("empty dimension")
			}
		}
		return t, nil
	case *milspec.ValueType_StateType:
		inner, err := valueType(x.StateType.GetWrappedType())
		if err != nil {
			return mil.Type{}, fmt.Errorf("state: %w", err)
		}
		return mil.StateType(inner), nil
	case *milspec.ValueType_ListType:
		inner, err := valueType(x.ListType.GetType())
		if err != nil {
			return mil.Type{}, fmt.Errorf("list: %w", err)
		}
		t := mil.Type{Kind: mil.KindList, Elem: &inner, ListLen: mil.Unknown}
		if c, ok := x.ListType.GetLength().GetDimension().(*milspec.Dimension_Constant); ok {
			t.ListLen = int64(c.Constant.GetSize())
		}
		return t, nil
	case *milspec.ValueType_TupleType:
		t := mil.Type{Kind: mil.KindTuple}
		for _, e := range x.TupleType.GetTypes() {
			et, err := valueType(e)
			if err != nil {
				return mil.Type{}, fmt.Errorf("tuple: %w", err)
			}
			t.Elems = append(t.Elems, et)
		}
		return t, nil
	case *milspec.ValueType_DictionaryType:
		k, err := valueType(x.DictionaryType.GetKeyType())
		if err != nil {
			return mil.Type{}, fmt.Errorf("dict key: %w", err)
		}
		v, err := valueType(x.DictionaryType.GetValueType())
		if err != nil {
			return mil.Type{}, fmt.Errorf("dict value: %w", err)
		}
		return mil.DictType(k, v), nil
	}
	return mil.Type{}, fmt.Errorf("empty value type")
}

func (d *decoder) value(pv *milspec.Value) (*mil.Value, error) {
	if pv == nil {
		return nil, fmt.Errorf("missing value")
	}
	if pv.GetDocString() != "" {
		return nil, fmt.Errorf("values with a docString are not supported")
	}
	t, err := valueType(pv.GetType())
	if err != nil {
		return nil, err
	}
	v := &mil.Value{Type: t}
	switch x := pv.GetValue().(type) {
	case *milspec.Value_BlobFileValue_:
		if t.Kind != mil.KindTensor || !t.Static() {
			return nil, fmt.Errorf("blob value of type %s", t)
		}
		key := sharedBlob{x.BlobFileValue.GetFileName(), x.BlobFileValue.GetOffset(), t.String()}
		if prev, ok := d.shared[key]; ok {
			return prev, nil
		}
		d.shared[key] = v
		v.Storage = mil.StorageBlob
		v.BlobFile = x.BlobFileValue.GetFileName()
		v.BlobOffset = x.BlobFileValue.GetOffset()
		if d.blobs != nil {
			file, off, n, src := v.BlobFile, v.BlobOffset, t.NumElements(), d.blobs
			v.Source = func() ([]byte, error) { return src(file, off, t.DType, n) }
		}
		return v, nil
	case *milspec.Value_ImmediateValue_:
		v.Storage = mil.StorageImmediate
		return v, d.immediate(v, x.ImmediateValue)
	}
	return nil, fmt.Errorf("value has neither an immediate nor a blob")
}

func (d *decoder) immediate(v *mil.Value, iv *milspec.Value_ImmediateValue) error {
	switch x := iv.GetValue().(type) {
	case *milspec.Value_ImmediateValue_Tensor:
		return tensorFromSpec(v, x.Tensor)
	case *milspec.Value_ImmediateValue_Tuple:
		for _, e := range x.Tuple.GetValues() {
			ev, err := d.value(e)
			if err != nil {
				return err
			}
			v.Elems = append(v.Elems, ev)
		}
		return nil
	case *milspec.Value_ImmediateValue_List:
		for _, e := range x.List.GetValues() {
			ev, err := d.value(e)
			if err != nil {
				return err
			}
			v.Elems = append(v.Elems, ev)
		}
		return nil
	case *milspec.Value_ImmediateValue_Dictionary:
		for _, kv := range x.Dictionary.GetValues() {
			k, err := d.value(kv.GetKey())
			if err != nil {
				return err
			}
			val, err := d.value(kv.GetValue())
			if err != nil {
				return err
			}
			v.Entries = append(v.Entries, mil.DictEntry{Key: k, Value: val})
		}
		return nil
	}
	return fmt.Errorf("empty immediate value")
}

// tensorFromSpec fills v.Data (or v.Strings) with the canonical bytes of a
// TensorValue, checking the element count against v's type.
func tensorFromSpec(v *mil.Value, tv *milspec.TensorValue) error {
	t := v.Type
	if t.Kind != mil.KindTensor || !t.Static() {
		return fmt.Errorf("immediate tensor of type %s", t)
	}
	n := t.NumElements()
	dt := t.DType
	width := dt.Bits() / 8
	count := func(got int) error {
		if int64(got) != n {
			return fmt.Errorf("%s value has %d elements", t, got)
		}
		return nil
	}
	switch x := tv.GetValue().(type) {
	case nil:
		if n != 0 {
			return fmt.Errorf("%s value is empty", t)
		}
		v.Data = []byte{}
	case *milspec.TensorValue_Floats:
		vals := x.Floats.GetValues()
		if err := count(len(vals)); err != nil {
			return err
		}
		if dt != mil.Float32 {
			return fmt.Errorf("floats given for %s", dt)
		}
		v.Data = make([]byte, 0, 4*len(vals))
		for _, f := range vals {
			v.Data = binary.LittleEndian.AppendUint32(v.Data, math.Float32bits(f))
		}
	case *milspec.TensorValue_Doubles:
		vals := x.Doubles.GetValues()
		if err := count(len(vals)); err != nil {
			return err
		}
		if dt != mil.Float64 {
			return fmt.Errorf("doubles given for %s", dt)
		}
		for _, f := range vals {
			v.Data = binary.LittleEndian.AppendUint64(v.Data, math.Float64bits(f))
		}
		if v.Data == nil {
			v.Data = []byte{}
		}
	case *milspec.TensorValue_Ints:
		vals := x.Ints.GetValues()
		if err := count(len(vals)); err != nil {
			return err
		}
		if !dt.IsInt() || width < 1 || width > 4 {
			return fmt.Errorf("ints given for %s", dt)
		}
		v.Data = make([]byte, 0, width*len(vals))
		for _, i := range vals {
			var b [4]byte
			binary.LittleEndian.PutUint32(b[:], uint32(i))
			v.Data = append(v.Data, b[:width]...)
		}
	case *milspec.TensorValue_LongInts:
		vals := x.LongInts.GetValues()
		if err := count(len(vals)); err != nil {
			return err
		}
		if dt != mil.Int64 && dt != mil.UInt64 {
			return fmt.Errorf("longInts given for %s", dt)
		}
		v.Data = make([]byte, 0, 8*len(vals))
		for _, i := range vals {
			v.Data = binary.LittleEndian.AppendUint64(v.Data, uint64(i))
		}
	case *milspec.TensorValue_Bools:
		vals := x.Bools.GetValues()
		if err := count(len(vals)); err != nil {
			return err
		}
		if dt != mil.Bool {
			return fmt.Errorf("bools given for %s", dt)
		}
		v.Data = make([]byte, len(vals))
		for i, b := range vals {
			if b {
				v.Data[i] = 1
			}
		}
	case *milspec.TensorValue_Strings:
		vals := x.Strings.GetValues()
		if err := count(len(vals)); err != nil {
			return err
		}
		if dt != mil.String {
			return fmt.Errorf("strings given for %s", dt)
		}
		v.Strings = append([]string{}, vals...)
	case *milspec.TensorValue_Bytes:
		b := x.Bytes.GetValues()
		if dt == mil.String || dt.Bits() == 0 {
			return fmt.Errorf("bytes given for %s", dt)
		}
		if int64(len(b)) != dt.ByteLen(n) {
			return fmt.Errorf("%s value has %d bytes, want %d", t, len(b), dt.ByteLen(n))
		}
		v.Data = append([]byte{}, b...)
	default:
		return fmt.Errorf("unsupported tensor value member")
	}
	return nil
}

func descriptionFromSpec(md *spec.ModelDescription) (Description, error) {
	var d Description
	var err error
	conv := func(fs []*spec.FeatureDescription, what string) ([]Feature, error) {
		out := make([]Feature, 0, len(fs))
		for _, f := range fs {
			ft, err := featureFromSpec(f)
			if err != nil {
				return nil, fmt.Errorf("coreml: %s %q: %w", what, f.GetName(), err)
			}
			out = append(out, ft)
		}
		return out, nil
	}
	if d.Inputs, err = conv(md.GetInput(), "input"); err != nil {
		return d, err
	}
	if d.Outputs, err = conv(md.GetOutput(), "output"); err != nil {
		return d, err
	}
	if d.States, err = conv(md.GetState(), "state"); err != nil {
		return d, err
	}
	for _, fd := range md.GetFunctions() {
		f := FunctionDescription{Name: fd.GetName()}
		if f.Inputs, err = conv(fd.GetInput(), "input"); err != nil {
			return d, err
		}
		if f.Outputs, err = conv(fd.GetOutput(), "output"); err != nil {
			return d, err
		}
		if f.States, err = conv(fd.GetState(), "state"); err != nil {
			return d, err
		}
		d.Functions = append(d.Functions, f)
	}
	d.DefaultFunction = md.GetDefaultFunctionName()
	meta := md.GetMetadata()
	d.Metadata = Metadata{
		ShortDescription: meta.GetShortDescription(),
		Version:          meta.GetVersionString(),
		Author:           meta.GetAuthor(),
		License:          meta.GetLicense(),
	}
	if len(meta.GetUserDefined()) > 0 {
		d.Metadata.UserDefined = make(map[string]string, len(meta.GetUserDefined()))
		for k, v := range meta.GetUserDefined() {
			d.Metadata.UserDefined[k] = v
		}
	}
	return d, nil
}

var arrayDTypes = map[spec.ArrayFeatureType_ArrayDataType]mil.DType{
	spec.ArrayFeatureType_FLOAT32: mil.Float32,
	spec.ArrayFeatureType_FLOAT16: mil.Float16,
	spec.ArrayFeatureType_DOUBLE:  mil.Float64,
	spec.ArrayFeatureType_INT32:   mil.Int32,
	spec.ArrayFeatureType_INT8:    mil.Int8,
}

func arrayFromSpec(f *Feature, a *spec.ArrayFeatureType) error {
	dt, ok := arrayDTypes[a.GetDataType()]
	if !ok {
		return fmt.Errorf("array data type %v is not supported", a.GetDataType())
	}
	f.DType = dt
	f.Shape = append([]int64(nil), a.GetShape()...)
	switch sf := a.GetShapeFlexibility().(type) {
	case *spec.ArrayFeatureType_EnumeratedShapes_:
		for _, s := range sf.EnumeratedShapes.GetShapes() {
			f.Enumerated = append(f.Enumerated, append([]int64{}, s.GetShape()...))
		}
		if f.Enumerated == nil {
			f.Enumerated = [][]int64{}
		}
	case *spec.ArrayFeatureType_ShapeRange_:
		for _, r := range sf.ShapeRange.GetSizeRanges() {
			f.Ranges = append(f.Ranges, [2]int64{int64(r.GetLowerBound()), r.GetUpperBound()})
		}
		if f.Ranges == nil {
			f.Ranges = [][2]int64{}
		}
	}
	if a.GetDefaultOptionalValue() != nil {
		return fmt.Errorf("array default values are not supported")
	}
	return nil
}

func featureFromSpec(fd *spec.FeatureDescription) (Feature, error) {
	f := Feature{Name: fd.GetName(), ShortDescription: fd.GetShortDescription()}
	ft := fd.GetType()
	f.Optional = ft.GetIsOptional()
	switch x := ft.GetType().(type) {
	case *spec.FeatureType_MultiArrayType:
		f.Kind = MultiArray
		return f, arrayFromSpec(&f, x.MultiArrayType)
	case *spec.FeatureType_StateType:
		f.Kind = StateFeature
		a := x.StateType.GetArrayType()
		if a == nil {
			return f, fmt.Errorf("state without an array type")
		}
		return f, arrayFromSpec(&f, a)
	}
	return f, fmt.Errorf("feature type %T is not supported (only multi-arrays and states)", ft.GetType())
}
