package coreml

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/anemll/anemll/internal/coreml/spec"
	"github.com/anemll/anemll/internal/coreml/spec/milspec"
	"github.com/anemll/anemll/internal/mil"
)

// BlobSink stores a constant in the weight file and returns the file name
// and the offset of its blob metadata record.
type BlobSink func(v *mil.Value) (file string, offset uint64, err error)

// ToSpec converts pkg into a Model message. Constants that belong in the
// weight file (Value.WantsBlob) are handed to sink in program order.
func ToSpec(pkg *Package, sink BlobSink) (*spec.Model, error) {
	if pkg.Program == nil {
		return nil, fmt.Errorf("coreml: package has no program")
	}
	e := &encoder{sink: sink}
	prog, err := e.program(pkg.Program)
	if err != nil {
		return nil, err
	}
	desc, err := descriptionToSpec(&pkg.Description)
	if err != nil {
		return nil, err
	}
	return &spec.Model{
		SpecificationVersion: pkg.SpecVersion,
		Description:          desc,
		Type:                 &spec.Model_MlProgram{MlProgram: prog},
	}, nil
}

type encoder struct {
	sink BlobSink
}

func (e *encoder) program(p *mil.Program) (*milspec.Program, error) {
	pp := &milspec.Program{Version: p.Version, DocString: p.DocString, Functions: map[string]*milspec.Function{}}
	for _, a := range p.Attrs {
		v, err := e.value(a.Value)
		if err != nil {
			return nil, fmt.Errorf("coreml: program attribute %q: %w", a.Name, err)
		}
		if pp.Attributes == nil {
			pp.Attributes = map[string]*milspec.Value{}
		}
		pp.Attributes[a.Name] = v
	}
	for _, f := range sortedFunctions(p) {
		pf, err := e.function(f)
		if err != nil {
			return nil, fmt.Errorf("coreml: function %q: %w", f.Name, err)
		}
		pp.Functions[f.Name] = pf
	}
	return pp, nil
}

// sortedFunctions returns p's functions ordered by name: the order blobs
// are laid out in, so output does not depend on insertion order.
func sortedFunctions(p *mil.Program) []*mil.Function {
	out := make([]*mil.Function, 0, len(p.Functions))
	for _, name := range p.FunctionNames() {
		out = append(out, p.Function(name))
	}
	return out
}

func (e *encoder) function(f *mil.Function) (*milspec.Function, error) {
	pf := &milspec.Function{Opset: f.Opset}
	for _, in := range f.Inputs {
		pf.Inputs = append(pf.Inputs, namedTypeToSpec(in))
	}
	b, err := e.block(f.Body)
	if err != nil {
		return nil, err
	}
	pf.BlockSpecializations = map[string]*milspec.Block{f.Opset: b}
	return pf, nil
}

func namedTypeToSpec(nt mil.NamedType) *milspec.NamedValueType {
	return &milspec.NamedValueType{Name: nt.Name, Type: typeToSpec(nt.Type)}
}

func (e *encoder) block(b *mil.Block) (*milspec.Block, error) {
	pb := &milspec.Block{Outputs: append([]string(nil), b.Outputs...)}
	for _, in := range b.Inputs {
		pb.Inputs = append(pb.Inputs, namedTypeToSpec(in))
	}
	for _, op := range b.Ops {
		po, err := e.op(op)
		if err != nil {
			return nil, fmt.Errorf("op %q (%s): %w", op.Name, op.Type, err)
		}
		pb.Operations = append(pb.Operations, po)
	}
	return pb, nil
}

func (e *encoder) op(op *mil.Op) (*milspec.Operation, error) {
	po := &milspec.Operation{Type: op.Type, Attributes: map[string]*milspec.Value{}}
	name, _ := e.value(mil.ScalarString(op.Name))
	po.Attributes["name"] = name
	for _, a := range op.Attrs {
		v, err := e.value(a.Value)
		if err != nil {
			return nil, fmt.Errorf("attribute %q: %w", a.Name, err)
		}
		po.Attributes[a.Name] = v
	}
	if len(op.Inputs) > 0 {
		po.Inputs = make(map[string]*milspec.Argument, len(op.Inputs))
	}
	for _, in := range op.Inputs {
		arg := &milspec.Argument{}
		for _, a := range in.Args {
			if a.Value != nil {
				v, err := e.value(a.Value)
				if err != nil {
					return nil, fmt.Errorf("input %q: %w", in.Param, err)
				}
				arg.Arguments = append(arg.Arguments, &milspec.Argument_Binding{Binding: &milspec.Argument_Binding_Value{Value: v}})
			} else {
				arg.Arguments = append(arg.Arguments, &milspec.Argument_Binding{Binding: &milspec.Argument_Binding_Name{Name: a.Name}})
			}
		}
		po.Inputs[in.Param] = arg
	}
	for _, o := range op.Outputs {
		po.Outputs = append(po.Outputs, namedTypeToSpec(o))
	}
	for _, b := range op.Blocks {
		pb, err := e.block(b)
		if err != nil {
			return nil, err
		}
		po.Blocks = append(po.Blocks, pb)
	}
	return po, nil
}

func typeToSpec(t mil.Type) *milspec.ValueType {
	switch t.Kind {
	case mil.KindTensor:
		tt := &milspec.TensorType{DataType: milspec.DataType(t.DType)}
		if t.VariableRank {
			tt.Rank = -1
		} else {
			tt.Rank = int64(len(t.Shape))
			for _, d := range t.Shape {
				if d < 0 {
					tt.Dimensions = append(tt.Dimensions, &milspec.Dimension{Dimension: &milspec.Dimension_Unknown{Unknown: &milspec.Dimension_UnknownDimension{}}})
				} else {
					tt.Dimensions = append(tt.Dimensions, &milspec.Dimension{Dimension: &milspec.Dimension_Constant{Constant: &milspec.Dimension_ConstantDimension{Size: uint64(d)}}})
				}
			}
		}
		return &milspec.ValueType{Type: &milspec.ValueType_TensorType{TensorType: tt}}
	case mil.KindState:
		return &milspec.ValueType{Type: &milspec.ValueType_StateType{StateType: &milspec.StateType{WrappedType: typeToSpec(*t.Elem)}}}
	case mil.KindList:
		lt := &milspec.ListType{Type: typeToSpec(*t.Elem)}
		if t.ListLen >= 0 {
			lt.Length = &milspec.Dimension{Dimension: &milspec.Dimension_Constant{Constant: &milspec.Dimension_ConstantDimension{Size: uint64(t.ListLen)}}}
		} else {
			lt.Length = &milspec.Dimension{Dimension: &milspec.Dimension_Unknown{Unknown: &milspec.Dimension_UnknownDimension{}}}
		}
		return &milspec.ValueType{Type: &milspec.ValueType_ListType{ListType: lt}}
	case mil.KindTuple:
		tt := &milspec.TupleType{}
		for _, e := range t.Elems {
			tt.Types = append(tt.Types, typeToSpec(e))
		}
		return &milspec.ValueType{Type: &milspec.ValueType_TupleType{TupleType: tt}}
	case mil.KindDict:
		return &milspec.ValueType{Type: &milspec.ValueType_DictionaryType{DictionaryType: &milspec.DictionaryType{KeyType: typeToSpec(*t.Key), ValueType: typeToSpec(*t.Value)}}}
	}
	return &milspec.ValueType{}
}

func (e *encoder) value(v *mil.Value) (*milspec.Value, error) {
	pv := &milspec.Value{Type: typeToSpec(v.Type)}
	switch v.Type.Kind {
	case mil.KindTensor:
		if v.WantsBlob() {
			if e.sink == nil {
				return nil, fmt.Errorf("a %s constant needs a weight file", v.Type)
			}
			file, off, err := e.sink(v)
			if err != nil {
				return nil, err
			}
			pv.Value = &milspec.Value_BlobFileValue_{BlobFileValue: &milspec.Value_BlobFileValue{FileName: file, Offset: off}}
			return pv, nil
		}
		tv, err := tensorToSpec(v)
		if err != nil {
			return nil, err
		}
		pv.Value = &milspec.Value_ImmediateValue_{ImmediateValue: &milspec.Value_ImmediateValue{Value: &milspec.Value_ImmediateValue_Tensor{Tensor: tv}}}
	case mil.KindTuple, mil.KindList:
		var vals []*milspec.Value
		for _, el := range v.Elems {
			ev, err := e.value(el)
			if err != nil {
				return nil, err
			}
			vals = append(vals, ev)
		}
		iv := &milspec.Value_ImmediateValue{}
		if v.Type.Kind == mil.KindTuple {
			iv.Value = &milspec.Value_ImmediateValue_Tuple{Tuple: &milspec.TupleValue{Values: vals}}
		} else {
			iv.Value = &milspec.Value_ImmediateValue_List{List: &milspec.ListValue{Values: vals}}
		}
		pv.Value = &milspec.Value_ImmediateValue_{ImmediateValue: iv}
	case mil.KindDict:
		dv := &milspec.DictionaryValue{}
		for _, en := range v.Entries {
			k, err := e.value(en.Key)
			if err != nil {
				return nil, err
			}
			val, err := e.value(en.Value)
			if err != nil {
				return nil, err
			}
			dv.Values = append(dv.Values, &milspec.DictionaryValue_KeyValuePair{Key: k, Value: val})
		}
		pv.Value = &milspec.Value_ImmediateValue_{ImmediateValue: &milspec.Value_ImmediateValue{Value: &milspec.Value_ImmediateValue_Dictionary{Dictionary: dv}}}
	default:
		return nil, fmt.Errorf("cannot store a %s constant", v.Type)
	}
	return pv, nil
}

// tensorToSpec encodes an immediate tensor with the TensorValue member
// coremltools uses for its dtype.
func tensorToSpec(v *mil.Value) (*milspec.TensorValue, error) {
	b, err := v.Bytes()
	if err != nil {
		return nil, err
	}
	if err := v.CheckSize(b); err != nil {
		return nil, err
	}
	dt := v.Type.DType
	n := int(v.Type.NumElements())
	tv := &milspec.TensorValue{}
	switch dt {
	case mil.Float32:
		vals := make([]float32, n)
		for i := range vals {
			vals[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
		tv.Value = &milspec.TensorValue_Floats{Floats: &milspec.TensorValue_RepeatedFloats{Values: vals}}
	case mil.Float64:
		vals := make([]float64, n)
		for i := range vals {
			vals[i] = math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:]))
		}
		tv.Value = &milspec.TensorValue_Doubles{Doubles: &milspec.TensorValue_RepeatedDoubles{Values: vals}}
	case mil.Int16, mil.UInt16, mil.Int32:
		ints, err := v.Ints()
		if err != nil {
			return nil, err
		}
		vals := make([]int32, n)
		for i, x := range ints {
			vals[i] = int32(x)
		}
		tv.Value = &milspec.TensorValue_Ints{Ints: &milspec.TensorValue_RepeatedInts{Values: vals}}
	case mil.Int64, mil.UInt64:
		vals := make([]int64, n)
		for i := range vals {
			vals[i] = int64(binary.LittleEndian.Uint64(b[8*i:]))
		}
		tv.Value = &milspec.TensorValue_LongInts{LongInts: &milspec.TensorValue_RepeatedLongInts{Values: vals}}
	case mil.Bool:
		vals := make([]bool, n)
		for i := range vals {
			vals[i] = b[i] != 0
		}
		tv.Value = &milspec.TensorValue_Bools{Bools: &milspec.TensorValue_RepeatedBools{Values: vals}}
	case mil.String:
		tv.Value = &milspec.TensorValue_Strings{Strings: &milspec.TensorValue_RepeatedStrings{Values: append([]string{}, v.Strings...)}}
	default:
		tv.Value = &milspec.TensorValue_Bytes{Bytes: &milspec.TensorValue_RepeatedBytes{Values: append([]byte{}, b...)}}
	}
	return tv, nil
}

var arrayDTypesBack = func() map[mil.DType]spec.ArrayFeatureType_ArrayDataType {
	m := map[mil.DType]spec.ArrayFeatureType_ArrayDataType{}
	for k, v := range arrayDTypes {
		m[v] = k
	}
	return m
}()

func arrayToSpec(f Feature) (*spec.ArrayFeatureType, error) {
	dt, ok := arrayDTypesBack[f.DType]
	if !ok {
		return nil, fmt.Errorf("coreml: feature %q: %s arrays are not supported", f.Name, f.DType)
	}
	a := &spec.ArrayFeatureType{DataType: dt, Shape: append([]int64(nil), f.Shape...)}
	switch {
	case f.Enumerated != nil:
		es := &spec.ArrayFeatureType_EnumeratedShapes{}
		for _, s := range f.Enumerated {
			es.Shapes = append(es.Shapes, &spec.ArrayFeatureType_Shape{Shape: append([]int64(nil), s...)})
		}
		a.ShapeFlexibility = &spec.ArrayFeatureType_EnumeratedShapes_{EnumeratedShapes: es}
	case f.Ranges != nil:
		sr := &spec.ArrayFeatureType_ShapeRange{}
		for _, r := range f.Ranges {
			sr.SizeRanges = append(sr.SizeRanges, &spec.SizeRange{LowerBound: uint64(r[0]), UpperBound: r[1]})
		}
		a.ShapeFlexibility = &spec.ArrayFeatureType_ShapeRange_{ShapeRange: sr}
	}
	return a, nil
}

func featureToSpec(f Feature) (*spec.FeatureDescription, error) {
	a, err := arrayToSpec(f)
	if err != nil {
		return nil, err
	}
	ft := &spec.FeatureType{IsOptional: f.Optional}
	switch f.Kind {
	case MultiArray:
		ft.Type = &spec.FeatureType_MultiArrayType{MultiArrayType: a}
	case StateFeature:
		ft.Type = &spec.FeatureType_StateType{StateType: &spec.StateFeatureType{Type: &spec.StateFeatureType_ArrayType{ArrayType: a}}}
	default:
		return nil, fmt.Errorf("coreml: feature %q has unknown kind %d", f.Name, f.Kind)
	}
	return &spec.FeatureDescription{Name: f.Name, ShortDescription: f.ShortDescription, Type: ft}, nil
}

func featuresToSpec(fs []Feature) ([]*spec.FeatureDescription, error) {
	var out []*spec.FeatureDescription
	for _, f := range fs {
		fd, err := featureToSpec(f)
		if err != nil {
			return nil, err
		}
		out = append(out, fd)
	}
	return out, nil
}

func descriptionToSpec(d *Description) (*spec.ModelDescription, error) {
	md := &spec.ModelDescription{DefaultFunctionName: d.DefaultFunction}
	var err error
	if md.Input, err = featuresToSpec(d.Inputs); err != nil {
		return nil, err
	}
	if md.Output, err = featuresToSpec(d.Outputs); err != nil {
		return nil, err
	}
	if md.State, err = featuresToSpec(d.States); err != nil {
		return nil, err
	}
	for _, f := range d.Functions {
		fd := &spec.FunctionDescription{Name: f.Name}
		if fd.Input, err = featuresToSpec(f.Inputs); err != nil {
			return nil, err
		}
		if fd.Output, err = featuresToSpec(f.Outputs); err != nil {
			return nil, err
		}
		if fd.State, err = featuresToSpec(f.States); err != nil {
			return nil, err
		}
		md.Functions = append(md.Functions, fd)
	}
	m := d.Metadata
	if m.ShortDescription != "" || m.Version != "" || m.Author != "" || m.License != "" || len(m.UserDefined) > 0 {
		md.Metadata = &spec.Metadata{ShortDescription: m.ShortDescription, VersionString: m.Version, Author: m.Author, License: m.License}
		if len(m.UserDefined) > 0 {
			md.Metadata.UserDefined = make(map[string]string, len(m.UserDefined))
			for k, v := range m.UserDefined {
				md.Metadata.UserDefined[k] = v
			}
		}
	}
	return md, nil
}
