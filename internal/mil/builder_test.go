package mil

import (
	"bytes"
	"strings"
	"testing"
)

func buildDecodeSnippet(t *testing.T) *Program {
	t.Helper()
	b := NewBuilder("main", OpsetIOS18)
	x := b.Input("hidden_states", TensorType(Float16, 1, 1, 64))
	pos := b.Input("current_pos", TensorType(Int32, 1))
	kv := b.Input("kv_cache", StateType(TensorType(Float16, 4, 2, 16, 8)))
	neg := b.Op("mul", "neg_x", In{"x": x, "y": F16(-1)})
	cat := b.Op("concat", "xx", In{"values": []*Var{x, neg}, "axis": -1, "interleave": false})
	ln := b.Op("layer_norm", "normed", In{"x": cat, "axes": []int{-1}, "epsilon": F16(1e-5)})
	sl := b.Op("slice_by_index", "half", In{"x": ln, "begin": []int{0, 0, 0}, "end": []int{1, 1, 64}, "end_mask": []bool{true, true, false}})
	tr := b.Op("transpose", "tr", In{"x": sl, "perm": []int{0, 2, 1}})
	ex := b.Op("expand_dims", "ex", In{"x": tr, "axes": []int{2}})
	w := b.Const("w", FP16FromFloat32([]int64{16, 64, 1, 1}, make([]float32, 16*64)))
	conv := b.Op("conv", "q", In{"x": ex, "weight": w, "strides": []int{1, 1}, "pad_type": "valid", "pad": []int{0, 0, 0, 0}, "dilations": []int{1, 1}, "groups": 1})
	rs := b.Op("reshape", "k", In{"x": conv, "shape": []int{1, 2, 1, 8}})
	cache := b.Op("read_state", "cache", In{"input": kv})
	begin := b.Op("concat", "begin", In{"values": []*Var{b.Const("b0", Int32Vec(0, 0)), pos, b.Const("b3", Int32Vec(0))}, "axis": 0})
	end := b.Op("add", "end", In{"x": begin, "y": b.Const("one", Int32Vec(1, 2, 1, 8))})
	up := b.Op("slice_update", "upd", In{"x": cache, "update": rs, "begin": begin, "end": end})
	b.OpN("write_state", "ws", In{"input": kv, "data": up})
	b.Output(sl)
	f, err := b.Function()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]int64{"xx": {1, 1, 128}, "half": {1, 1, 64}, "tr": {1, 64, 1}, "ex": {1, 64, 1, 1}, "q": {1, 16, 1, 1}, "k": {1, 2, 1, 8}, "cache": {4, 2, 16, 8}, "begin": {4}, "upd": {4, 2, 16, 8}}
	for name, shape := range want {
		v, ok := b.Var(name)
		if !ok {
			t.Fatalf("no var %s", name)
		}
		if ShapeString(v.Type.Shape) != ShapeString(shape) {
			t.Errorf("%s: shape %s, want %s", name, ShapeString(v.Type.Shape), ShapeString(shape))
		}
	}
	p := NewProgram()
	p.Functions = append(p.Functions, f)
	return p
}

func TestBuilderInfersShapes(t *testing.T) {
	p := buildDecodeSnippet(t)
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := Print(&buf, p); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, s := range []string{
		"func main<CoreML8>(tensor<fp16, [1, 1, 64]> hidden_states, tensor<int32, [1]> current_pos, state<tensor<fp16, [4, 2, 16, 8]>> kv_cache) {",
		"tensor<fp16, [1, 1, 128]> xx = concat(values = (hidden_states, neg_x), axis = xx_axis, interleave = xx_interleave)[name = string(\"xx\")];",
		"tensor<int32, [2]> q_strides = const()[name = string(\"q_strides\"), val = tensor<int32, [2]>([1, 1])];",
		"tensor<fp16, [16, 64, 1, 1]> w = const()[name = string(\"w\"), val = tensor<fp16, [16, 64, 1, 1]>(BLOB(2048 bytes))];",
		"write_state(input = kv_cache, data = upd)[name = string(\"ws\")];",
		"} -> (half);",
	} {
		if !strings.Contains(out, s) {
			t.Errorf("listing lacks %q\n%s", s, out)
		}
	}
}

func TestBuilderErrors(t *testing.T) {
	tests := []struct {
		name  string
		build func(b *Builder)
		want  string
	}{
		{"duplicate name", func(b *Builder) {
			x := b.Input("x", TensorType(Float16, 2))
			b.Op("exp", "x", In{"x": x})
		}, `name "x" is used twice`},
		{"bad identifier", func(b *Builder) { b.Input("1x", TensorType(Float16, 2)) }, "not a valid identifier"},
		{"unknown param", func(b *Builder) {
			x := b.Input("x", TensorType(Float16, 2))
			b.Op("exp", "e", In{"x": x, "alpha": 1})
		}, `unknown parameter "alpha"`},
		{"missing param", func(b *Builder) {
			x := b.Input("x", TensorType(Float16, 2))
			b.Op("add", "e", In{"x": x})
		}, `missing required parameter "y"`},
		{"foreign var", func(b *Builder) {
			other := NewBuilder("g", OpsetIOS18)
			y := other.Input("y", TensorType(Float16, 2))
			b.Op("exp", "e", In{"x": y})
		}, "not defined in this function"},
		{"dtype mismatch", func(b *Builder) {
			x := b.Input("x", TensorType(Float16, 2))
			y := b.Input("y", TensorType(Float32, 2))
			b.Op("add", "e", In{"x": x, "y": y})
		}, "x is fp16 but y is fp32"},
		{"broadcast", func(b *Builder) {
			x := b.Input("x", TensorType(Float16, 2, 3))
			y := b.Input("y", TensorType(Float16, 4))
			b.Op("add", "e", In{"x": x, "y": y})
		}, "do not broadcast"},
		{"bad reshape", func(b *Builder) {
			x := b.Input("x", TensorType(Float16, 2, 3))
			b.Op("reshape", "r", In{"x": x, "shape": []int{4, 2}})
		}, "cannot reshape"},
		{"conv channels", func(b *Builder) {
			x := b.Input("x", TensorType(Float16, 1, 8, 1, 1))
			w := b.Const("w", FP16FromFloat32([]int64{4, 6, 1, 1}, make([]float32, 24)))
			b.Op("conv", "c", In{"x": x, "weight": w})
		}, "input channels"},
		{"state misuse", func(b *Builder) {
			s := b.Input("s", StateType(TensorType(Float16, 2)))
			b.Op("exp", "e", In{"x": s})
		}, "must be a tensor"},
		{"write_state type", func(b *Builder) {
			s := b.Input("s", StateType(TensorType(Float16, 2)))
			x := b.Input("x", TensorType(Float16, 3))
			b.OpN("write_state", "w", In{"input": s, "data": x})
		}, "does not match state"},
		{"const size", func(b *Builder) { b.Const("c", NewTensor(Float16, []int64{3}, []byte{1, 2})) }, "has 2 bytes, want 6"},
		{"lut entries", func(b *Builder) {
			idx := NewTensor(UInt4, []int64{8, 4}, make([]byte, 16))
			lut := FP16FromFloat32([]int64{1, 1, 8, 1}, make([]float32, 8))
			b.Op("constexpr_lut_to_dense", "d", In{"indices": Literal{idx}, "lut": Literal{lut}})
		}, "need 16"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := NewBuilder("f", OpsetIOS18)
			tc.build(b)
			if b.Err() == nil || !strings.Contains(b.Err().Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", b.Err(), tc.want)
			}
			if _, err := b.Function(); err == nil {
				t.Fatal("Function succeeded after an error")
			}
		})
	}
}

func TestInferShapes(t *testing.T) {
	tests := []struct {
		name string
		op   string
		in   func(b *Builder) In
		want string
	}{
		{"gather enumerated", "gather", func(b *Builder) In {
			return In{"x": b.Const("e", FP16FromFloat32([]int64{10, 4}, make([]float32, 40))), "indices": b.Input("ids", TensorType(Int32, 1, Unknown)), "axis": 0}
		}, "tensor<fp16, [1, ?, 4]>"},
		{"matmul transpose", "matmul", func(b *Builder) In {
			return In{"x": b.Input("q", TensorType(Float16, 1, 4, 1, 16)), "y": b.Input("k", TensorType(Float16, 1, 4, 256, 16)), "transpose_y": true}
		}, "tensor<fp16, [1, 4, 1, 256]>"},
		{"reduce keep", "reduce_max", func(b *Builder) In {
			return In{"x": b.Input("x", TensorType(Float16, 1, 4, 1, 256)), "axes": []int{-1}, "keep_dims": true}
		}, "tensor<fp16, [1, 4, 1, 1]>"},
		{"tile", "tile", func(b *Builder) In {
			return In{"x": b.Input("x", TensorType(Float16, 1, 2, 1, 8, 16)), "reps": []int{1, 1, 2, 1, 1}}
		}, "tensor<fp16, [1, 2, 2, 8, 16]>"},
		{"squeeze all", "squeeze", func(b *Builder) In {
			return In{"x": b.Input("x", TensorType(Float16, 1, 64, 1, 1))}
		}, "tensor<fp16, [64]>"},
		{"slice negative", "slice_by_index", func(b *Builder) In {
			return In{"x": b.Input("x", TensorType(Float16, 4, 10)), "begin": []int{1, -3}, "end": []int{3, 0}, "end_mask": []bool{false, true}}
		}, "tensor<fp16, [2, 3]>"},
		{"slice squeeze", "slice_by_index", func(b *Builder) In {
			return In{"x": b.Input("x", TensorType(Float16, 4, 10)), "begin": []int{1, 0}, "end": []int{2, 10}, "squeeze_mask": []bool{true, false}}
		}, "tensor<fp16, [10]>"},
		{"lut", "constexpr_lut_to_dense", func(b *Builder) In {
			return In{"indices": Literal{NewTensor(UInt4, []int64{16, 8, 1, 1}, make([]byte, 64))}, "lut": Literal{FP16FromFloat32([]int64{2, 1, 1, 1, 16, 1}, make([]float32, 32))}}
		}, "tensor<fp16, [16, 8, 1, 1]>"},
		{"cast", "cast", func(b *Builder) In {
			return In{"x": b.Input("x", TensorType(Int32, 1, Unknown)), "dtype": "int16"}
		}, "tensor<int16, [1, ?]>"},
		{"compare", "greater_equal", func(b *Builder) In {
			return In{"x": b.Input("x", TensorType(Int32, 1)), "y": 0}
		}, "tensor<bool, [1]>"},
		{"linear", "linear", func(b *Builder) In {
			return In{"x": b.Input("x", TensorType(Float16, 1, 1, 64)), "weight": b.Const("w", FP16FromFloat32([]int64{32, 64}, make([]float32, 32*64)))}
		}, "tensor<fp16, [1, 1, 32]>"},
		{"reshape infer", "reshape", func(b *Builder) In {
			return In{"x": b.Input("x", TensorType(Float16, 1, 64, 1, 1)), "shape": []int{1, 4, -1, 16}}
		}, "tensor<fp16, [1, 4, 1, 16]>"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := NewBuilder("f", OpsetIOS18)
			v := b.Op(tc.op, "out", tc.in(b))
			if b.Err() != nil {
				t.Fatal(b.Err())
			}
			if got := v.Type.String(); got != tc.want {
				t.Fatalf("type %s, want %s", got, tc.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	p := buildDecodeSnippet(t)
	f := p.Functions[0]
	// Use before definition: move the last op first.
	ops := f.Body.Ops
	f.Body.Ops = append([]*Op{ops[len(ops)-1]}, ops[:len(ops)-1]...)
	if err := p.Validate(); err == nil || !strings.Contains(err.Error(), "before it is defined") {
		t.Fatalf("got %v", err)
	}
	f.Body.Ops = ops
	f.Body.Outputs = []string{"nope"}
	if err := p.Validate(); err == nil || !strings.Contains(err.Error(), `block output "nope"`) {
		t.Fatalf("got %v", err)
	}
	f.Body.Outputs = []string{"half"}
	p.Functions = append(p.Functions, p.Functions[0])
	if err := p.Validate(); err == nil || !strings.Contains(err.Error(), "duplicate function") {
		t.Fatalf("got %v", err)
	}
}

func TestValueAccessors(t *testing.T) {
	v := NewTensor(UInt6, []int64{5}, []byte{0x81, 0xf0, 0x13, 0x05})
	got, err := v.Ints()
	if err != nil {
		t.Fatal(err)
	}
	if want := []int64{1, 2, 63, 4, 5}; !equalInts(got, want) {
		t.Fatalf("uint6 unpack %v, want %v", got, want)
	}
	f, err := FP16FromFloat32([]int64{3}, []float32{1, -2, 0.5}).Floats()
	if err != nil || f[0] != 1 || f[1] != -2 || f[2] != 0.5 {
		t.Fatalf("fp16 floats %v %v", f, err)
	}
	if !FP16FromFloat32([]int64{10}, make([]float32, 10)).WantsBlob() || FP16FromFloat32([]int64{9}, make([]float32, 9)).WantsBlob() {
		t.Fatal("blob threshold is 10 elements")
	}
	if ScalarString("x").WantsBlob() || NewTensor(Bool, []int64{20}, make([]byte, 20)).WantsBlob() {
		t.Fatal("strings and bools stay immediate")
	}
}

func equalInts(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestCheckTypesCatchesWrongDeclaration(t *testing.T) {
	p := buildDecodeSnippet(t)
	if err := p.CheckTypes(); err != nil {
		t.Fatal(err)
	}
	for _, op := range p.Functions[0].Body.Ops {
		if op.Name == "tr" {
			op.Outputs[0].Type = TensorType(Float16, 1, 1, 64) // transpose really gives [1, 64, 1]
		}
	}
	if err := p.CheckTypes(); err == nil || !strings.Contains(err.Error(), `op "tr"`) {
		t.Fatalf("got %v", err)
	}
}
