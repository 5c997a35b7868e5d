package runtime

import (
	"errors"
	"math"
	"testing"

	"github.com/anemll/anemll/internal/fp16"
	"github.com/anemll/anemll/internal/mil"
)

// in is one named function input for a test program.
type in struct {
	name string
	t    *Tensor
}

func milType(t *Tensor) mil.Type {
	s := make([]int64, len(t.Shape))
	for i, d := range t.Shape {
		s[i] = int64(d)
	}
	return mil.TensorType(t.DType, s...)
}

// runOp builds a one-function program whose inputs are ins, body is made by
// build, and runs it; it returns the single output.
func runOp(t *testing.T, ins []in, build func(b *mil.Builder, v []*mil.Var) *mil.Var) *Tensor {
	t.Helper()
	out, err := tryOp(ins, build)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func tryOp(ins []in, build func(b *mil.Builder, v []*mil.Var) *mil.Var) (*Tensor, error) {
	b := mil.NewBuilder("main", mil.OpsetIOS18)
	vars := make([]*mil.Var, len(ins))
	feed := map[string]*Tensor{}
	for i, x := range ins {
		vars[i] = b.Input(x.name, milType(x.t))
		feed[x.name] = x.t
	}
	o := build(b, vars)
	b.Output(o)
	fn, err := b.Function()
	if err != nil {
		return nil, err
	}
	p := mil.NewProgram()
	p.Functions = append(p.Functions, fn)
	m, err := Load(p)
	if err != nil {
		return nil, err
	}
	f, err := m.Function("main")
	if err != nil {
		return nil, err
	}
	res, err := f.Predict(feed, nil)
	if err != nil {
		return nil, err
	}
	return res[o.Name], nil
}

func f16(shape []int, v ...float32) *Tensor { return NewFloat16(shape, v) }
func f32(shape []int, v ...float32) *Tensor { return NewFloat32(shape, v) }
func i32(shape []int, v ...int32) *Tensor   { return NewInt32(shape, v) }

func wantTensor(t *testing.T, got *Tensor, dt mil.DType, shape []int, f []float32, ints []int32) {
	t.Helper()
	if got.DType != dt || !equalInts(got.Shape, shape) {
		t.Fatalf("got %s %v, want %s %v", got.DType, got.Shape, dt, shape)
	}
	if f != nil {
		if len(got.F) != len(f) {
			t.Fatalf("got %d floats, want %d", len(got.F), len(f))
		}
		for i := range f {
			if got.F[i] != f[i] && !(math.IsNaN(float64(f[i])) && math.IsNaN(float64(got.F[i]))) {
				t.Fatalf("element %d = %v, want %v (all %v)", i, got.F[i], f[i], got.F)
			}
		}
	}
	if ints != nil {
		if len(got.I) != len(ints) {
			t.Fatalf("got %d ints, want %d", len(got.I), len(ints))
		}
		for i := range ints {
			if got.I[i] != ints[i] {
				t.Fatalf("element %d = %v, want %v (all %v)", i, got.I[i], ints[i], got.I)
			}
		}
	}
}

func r16(v float64) float32 { return fp16.Round(float32(v)) }

func TestBinaryFP16Rounding(t *testing.T) {
	const u = 1.0 / 2048 // 2^-11: half an ulp of 1 in fp16
	tests := []struct {
		name string
		op   string
		x, y *Tensor
		want *Tensor
	}{
		{"tie to even down", "add", f16([]int{1}, 1), f16([]int{1}, u), f16([]int{1}, 1)},
		{"tie to even up", "add", f16([]int{1}, 1), f16([]int{1}, 3*u), f16([]int{1}, 1+4*u)},
		{"fp32 not rounded", "add", f32([]int{1}, 1), f32([]int{1}, u), f32([]int{1}, 1+u)},
		{"overflow to inf", "mul", f16([]int{1}, 60000), f16([]int{1}, 2), &Tensor{DType: mil.Float16, Shape: []int{1}, F: []float32{float32(math.Inf(1))}}},
		{"div", "real_div", f16([]int{2}, 1, 2), f16([]int{2}, 3, 3), f16([]int{2}, r16(1.0/3), r16(2.0/3))},
		{"sub", "sub", f16([]int{2}, 1, 2), f16([]int{2}, 3, 0.5), f16([]int{2}, -2, 1.5)},
		{"max", "maximum", f16([]int{2}, 1, 5), f16([]int{2}, 3, 0.5), f16([]int{2}, 3, 5)},
		{"min", "minimum", f16([]int{2}, 1, 5), f16([]int{2}, 3, 0.5), f16([]int{2}, 1, 0.5)},
		{"pow", "pow", f16([]int{2}, 2, 9), f16([]int{2}, 10, 0.5), f16([]int{2}, 1024, 3)},
		{"int add", "add", i32([]int{2}, 7, -1), i32([]int{2}, 1024, 5), i32([]int{2}, 1031, 4)},
		{"int mul", "mul", i32([]int{2}, 7, -1), i32([]int{2}, 3, 5), i32([]int{2}, 21, -5)},
		{"int pow", "pow", i32([]int{2}, 3, 2), i32([]int{2}, 3, 0), i32([]int{2}, 27, 1)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := runOp(t, []in{{"x", tc.x}, {"y", tc.y}}, func(b *mil.Builder, v []*mil.Var) *mil.Var {
				return b.Op(tc.op, "z", mil.In{"x": v[0], "y": v[1]})
			})
			wantTensor(t, got, tc.want.DType, tc.want.Shape, tc.want.F, tc.want.I)
		})
	}
}

func TestBroadcast(t *testing.T) {
	// [2,1,3] + [4,1] -> [2,4,3]
	x := f32([]int{2, 1, 3}, 0, 1, 2, 100, 101, 102)
	y := f32([]int{4, 1}, 10, 20, 30, 40)
	var want []float32
	for a := 0; a < 2; a++ {
		for b := 0; b < 4; b++ {
			for c := 0; c < 3; c++ {
				want = append(want, x.F[a*3+c]+y.F[b])
			}
		}
	}
	got := runOp(t, []in{{"x", x}, {"y", y}}, func(b *mil.Builder, v []*mil.Var) *mil.Var {
		return b.Op("add", "z", mil.In{"x": v[0], "y": v[1]})
	})
	wantTensor(t, got, mil.Float32, []int{2, 4, 3}, want, nil)

	// Scalar constant operand.
	got = runOp(t, []in{{"x", f16([]int{1, 3}, 1, 2, 3)}}, func(b *mil.Builder, v []*mil.Var) *mil.Var {
		return b.Op("mul", "z", mil.In{"x": v[0], "y": mil.F16(-1)})
	})
	wantTensor(t, got, mil.Float16, []int{1, 3}, []float32{-1, -2, -3}, nil)

	if _, err := tryOp([]in{{"x", f32([]int{2, 3}, 1, 2, 3, 4, 5, 6)}, {"y", f32([]int{2}, 1, 2)}}, func(b *mil.Builder, v []*mil.Var) *mil.Var {
		return b.Op("add", "z", mil.In{"x": v[0], "y": v[1]})
	}); err == nil {
		t.Fatal("[2,3] + [2] should not broadcast")
	}
}

func TestCompareSelect(t *testing.T) {
	x := i32([]int{4}, -2, 0, 3, 5)
	cmp := []struct {
		op   string
		want []int32
	}{
		{"greater_equal", []int32{0, 1, 1, 1}},
		{"greater", []int32{0, 0, 1, 1}},
		{"less", []int32{1, 0, 0, 0}},
		{"less_equal", []int32{1, 1, 0, 0}},
		{"equal", []int32{0, 1, 0, 0}},
		{"not_equal", []int32{1, 0, 1, 1}},
	}
	for _, tc := range cmp {
		t.Run(tc.op, func(t *testing.T) {
			got := runOp(t, []in{{"x", x}}, func(b *mil.Builder, v []*mil.Var) *mil.Var {
				return b.Op(tc.op, "z", mil.In{"x": v[0], "y": 0})
			})
			wantTensor(t, got, mil.Bool, []int{4}, nil, tc.want)
		})
	}
	// The Apple negative-index pattern: select(x >= 0, x, x + N).
	got := runOp(t, []in{{"x", x}}, func(b *mil.Builder, v []*mil.Var) *mil.Var {
		ge := b.Op("greater_equal", "ge", mil.In{"x": v[0], "y": 0})
		add := b.Op("add", "add", mil.In{"x": v[0], "y": 10})
		return b.Op("select", "z", mil.In{"cond": ge, "a": v[0], "b": add})
	})
	wantTensor(t, got, mil.Int32, []int{4}, nil, []int32{8, 0, 3, 5})
	// Broadcast cond [2,1] against a [1,3] and b scalar.
	got = runOp(t, []in{{"c", NewBool([]int{2, 1}, []bool{true, false})}, {"a", f16([]int{1, 3}, 1, 2, 3)}}, func(b *mil.Builder, v []*mil.Var) *mil.Var {
		return b.Op("select", "z", mil.In{"cond": v[0], "a": v[1], "b": b.Const("b", mil.ScalarFP16(9))})
	})
	wantTensor(t, got, mil.Float16, []int{2, 3}, []float32{1, 2, 3, 9, 9, 9}, nil)
	// Float compare.
	got = runOp(t, []in{{"x", f16([]int{3}, -1, 0.5, 2)}}, func(b *mil.Builder, v []*mil.Var) *mil.Var {
		return b.Op("less", "z", mil.In{"x": v[0], "y": mil.F16(0.5)})
	})
	wantTensor(t, got, mil.Bool, []int{3}, nil, []int32{1, 0, 0})
}

func TestUnary(t *testing.T) {
	xs := []float32{-3, -0.5, 0, 0.1, 1, 2.5}
	x := f16([]int{6}, xs...)
	tests := []struct {
		op string
		f  func(float64) float64
	}{
		{"exp", math.Exp},
		{"silu", func(v float64) float64 { return v / (1 + math.Exp(-v)) }},
		{"sigmoid", func(v float64) float64 { return 1 / (1 + math.Exp(-v)) }},
		{"tanh", math.Tanh},
		{"relu", func(v float64) float64 { return math.Max(v, 0) }},
		{"abs", math.Abs},
	}
	// gelu's modes, written out from the MIL op definition.
	geluTanh := func(v float64) float64 { return 0.5 * v * (1 + math.Tanh(0.7978845608028654*(v+0.044715*v*v*v))) }
	for _, g := range []struct {
		mode string
		f    func(float64) float64
	}{
		{"EXACT", func(v float64) float64 { return 0.5 * v * (1 + math.Erf(v/math.Sqrt2)) }},
		{"TANH_APPROXIMATION", geluTanh},
		{"SIGMOID_APPROXIMATION", func(v float64) float64 { return v / (1 + math.Exp(-1.702*v)) }},
	} {
		t.Run("gelu "+g.mode, func(t *testing.T) {
			got := runOp(t, []in{{"x", x}}, func(b *mil.Builder, v []*mil.Var) *mil.Var {
				return b.Op("gelu", "z", mil.In{"x": v[0], "mode": g.mode})
			})
			want := make([]float32, len(xs))
			for i := range xs {
				want[i] = r16(g.f(float64(x.F[i])))
			}
			wantTensor(t, got, mil.Float16, []int{6}, want, nil)
		})
	}
	for _, tc := range tests {
		t.Run(tc.op, func(t *testing.T) {
			got := runOp(t, []in{{"x", x}}, func(b *mil.Builder, v []*mil.Var) *mil.Var {
				return b.Op(tc.op, "z", mil.In{"x": v[0]})
			})
			want := make([]float32, len(xs))
			for i := range xs {
				want[i] = r16(tc.f(float64(x.F[i])))
			}
			wantTensor(t, got, mil.Float16, []int{6}, want, nil)
		})
	}
	pos := f16([]int{3}, 4, 2, 0.25)
	got := runOp(t, []in{{"x", pos}}, func(b *mil.Builder, v []*mil.Var) *mil.Var {
		return b.Op("sqrt", "z", mil.In{"x": v[0]})
	})
	wantTensor(t, got, mil.Float16, []int{3}, []float32{2, r16(math.Sqrt2), 0.5}, nil)
	got = runOp(t, []in{{"x", pos}}, func(b *mil.Builder, v []*mil.Var) *mil.Var {
		return b.Op("rsqrt", "z", mil.In{"x": v[0], "epsilon": mil.F16(0)})
	})
	wantTensor(t, got, mil.Float16, []int{3}, []float32{0.5, r16(1 / math.Sqrt2), 2}, nil)
	got = runOp(t, []in{{"x", pos}}, func(b *mil.Builder, v []*mil.Var) *mil.Var {
		return b.Op("identity", "z", mil.In{"x": v[0]})
	})
	wantTensor(t, got, mil.Float16, []int{3}, pos.F, nil)
}

func TestCast(t *testing.T) {
	tests := []struct {
		name string
		x    *Tensor
		to   string
		dt   mil.DType
		f    []float32
		i    []int32
	}{
		{"int32 to int16 wraps", i32([]int{3}, 40000, -5, 32767), "int16", mil.Int16, nil, []int32{-25536, -5, 32767}},
		{"int16 back to int32", &Tensor{DType: mil.Int16, Shape: []int{1}, I: []int32{-25536}}, "int32", mil.Int32, nil, []int32{-25536}},
		{"fp16 to int32 truncates", f16([]int{3}, 2.75, -2.75, 1e4), "int32", mil.Int32, nil, []int32{2, -2, 10000}},
		{"int32 to fp16 rounds", i32([]int{2}, 2049, 3), "fp16", mil.Float16, []float32{2048, 3}, nil},
		{"fp32 to fp16 rounds", f32([]int{1}, 1+1.0/2048), "fp16", mil.Float16, []float32{1}, nil},
		{"to bool", i32([]int{3}, 0, 7, -1), "bool", mil.Bool, nil, []int32{0, 1, 1}},
		{"to uint8 wraps", i32([]int{2}, 257, -1), "uint8", mil.UInt8, nil, []int32{1, 255}},
		{"to int8 wraps", i32([]int{2}, 129, -129), "int8", mil.Int8, nil, []int32{-127, 127}},
		{"fp16 to fp32", f16([]int{1}, 0.1), "fp32", mil.Float32, []float32{r16(0.1)}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := runOp(t, []in{{"x", tc.x}}, func(b *mil.Builder, v []*mil.Var) *mil.Var {
				return b.Op("cast", "z", mil.In{"x": v[0], "dtype": tc.to})
			})
			wantTensor(t, got, tc.dt, tc.x.Shape, tc.f, tc.i)
		})
	}
}

func TestLayerNorm(t *testing.T) {
	x := f16([]int{2, 4}, 1, 2, 3, 4, -1, -1, 1, 1)
	eps := 1e-5
	ln := func(row []float64, g, bta []float64) []float32 {
		var m, v float64
		for _, r := range row {
			m += r
		}
		m /= float64(len(row))
		for _, r := range row {
			v += (r - m) * (r - m)
		}
		v /= float64(len(row))
		out := make([]float32, len(row))
		for i, r := range row {
			y := (r - m) / math.Sqrt(v+float64(r16(eps)))
			if g != nil {
				y = y*g[i] + bta[i]
			}
			out[i] = r16(y)
		}
		return out
	}
	want := append(ln([]float64{1, 2, 3, 4}, nil, nil), ln([]float64{-1, -1, 1, 1}, nil, nil)...)
	got := runOp(t, []in{{"x", x}}, func(b *mil.Builder, v []*mil.Var) *mil.Var {
		return b.Op("layer_norm", "z", mil.In{"x": v[0], "axes": []int{-1}, "epsilon": mil.F16(float32(eps))})
	})
	wantTensor(t, got, mil.Float16, []int{2, 4}, want, nil)
	if got.F[4] != -1 || got.F[0] != r16(-1.5/math.Sqrt(1.25+float64(r16(eps)))) {
		t.Fatalf("hand values: %v", got.F)
	}
	g, bt := []float64{1, 2, 0.5, -1}, []float64{0, 1, 0, 0.25}
	want = append(ln([]float64{1, 2, 3, 4}, g, bt), ln([]float64{-1, -1, 1, 1}, g, bt)...)
	got = runOp(t, []in{{"x", x}}, func(b *mil.Builder, v []*mil.Var) *mil.Var {
		return b.Op("layer_norm", "z", mil.In{"x": v[0], "axes": []int{1}, "epsilon": mil.F16(float32(eps)),
			"gamma": b.Const("g", mil.FP16FromFloat32([]int64{4}, []float32{1, 2, 0.5, -1})),
			"beta":  b.Const("bt", mil.FP16FromFloat32([]int64{4}, []float32{0, 1, 0, 0.25}))})
	})
	wantTensor(t, got, mil.Float16, []int{2, 4}, want, nil)
}

func TestReduce(t *testing.T) {
	x := f32([]int{2, 3}, 1, 5, 3, -4, 2, 8)
	tests := []struct {
		op    string
		axes  []int
		keep  bool
		shape []int
		want  []float32
	}{
		{"reduce_max", []int{-1}, true, []int{2, 1}, []float32{5, 8}},
		{"reduce_max", []int{0}, false, []int{3}, []float32{1, 5, 8}},
		{"reduce_sum", []int{1}, false, []int{2}, []float32{9, 6}},
		{"reduce_sum", nil, false, []int{}, []float32{15}},
		{"reduce_mean", []int{0, 1}, true, []int{1, 1}, []float32{2.5}},
		{"reduce_mean", []int{0}, false, []int{3}, []float32{-1.5, 3.5, 5.5}},
	}
	for _, tc := range tests {
		t.Run(tc.op, func(t *testing.T) {
			got := runOp(t, []in{{"x", x}}, func(b *mil.Builder, v []*mil.Var) *mil.Var {
				p := mil.In{"x": v[0], "keep_dims": tc.keep}
				if tc.axes != nil {
					p["axes"] = tc.axes
				}
				return b.Op(tc.op, "z", p)
			})
			wantTensor(t, got, mil.Float32, tc.shape, tc.want, nil)
		})
	}
	got := runOp(t, []in{{"x", x}}, func(b *mil.Builder, v []*mil.Var) *mil.Var {
		return b.Op("reduce_argmax", "z", mil.In{"x": v[0], "axis": -1, "keep_dims": false})
	})
	wantTensor(t, got, mil.Int32, []int{2}, nil, []int32{1, 2})
	got = runOp(t, []in{{"x", x}}, func(b *mil.Builder, v []*mil.Var) *mil.Var {
		return b.Op("reduce_argmax", "z", mil.In{"x": v[0], "axis": 0, "keep_dims": true})
	})
	wantTensor(t, got, mil.Int32, []int{1, 3}, nil, []int32{0, 0, 1})
}

func TestSoftmax(t *testing.T) {
	x := f16([]int{2, 3}, 0, 1, 2, 5, 5, float32(math.Inf(-1)))
	e := []float64{1, math.E, math.E * math.E}
	s := e[0] + e[1] + e[2]
	want := []float32{r16(e[0] / s), r16(e[1] / s), r16(e[2] / s), 0.5, 0.5, 0}
	got := runOp(t, []in{{"x", x}}, func(b *mil.Builder, v []*mil.Var) *mil.Var {
		return b.Op("softmax", "z", mil.In{"x": v[0], "axis": -1})
	})
	wantTensor(t, got, mil.Float16, []int{2, 3}, want, nil)
	got = runOp(t, []in{{"x", f32([]int{2, 1}, 0, 0)}}, func(b *mil.Builder, v []*mil.Var) *mil.Var {
		return b.Op("softmax", "z", mil.In{"x": v[0], "axis": 0})
	})
	wantTensor(t, got, mil.Float32, []int{2, 1}, []float32{0.5, 0.5}, nil)
}

func seq(n int, start float32) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = start + float32(i)
	}
	return out
}

func TestConcatSplit(t *testing.T) {
	a := f16([]int{2, 2}, 1, 2, 3, 4)
	b2 := f16([]int{2, 1}, 9, 8)
	got := runOp(t, []in{{"a", a}, {"b", b2}}, func(b *mil.Builder, v []*mil.Var) *mil.Var {
		return b.Op("concat", "z", mil.In{"values": v, "axis": -1, "interleave": false})
	})
	wantTensor(t, got, mil.Float16, []int{2, 3}, []float32{1, 2, 9, 3, 4, 8}, nil)
	got = runOp(t, []in{{"a", a}, {"b", f16([]int{2, 2}, 5, 6, 7, 8)}}, func(b *mil.Builder, v []*mil.Var) *mil.Var {
		return b.Op("concat", "z", mil.In{"values": v, "axis": 1, "interleave": true})
	})
	wantTensor(t, got, mil.Float16, []int{2, 4}, []float32{1, 5, 2, 6, 3, 7, 4, 8}, nil)
	got = runOp(t, []in{{"a", a}, {"b", a}}, func(b *mil.Builder, v []*mil.Var) *mil.Var {
		return b.Op("concat", "z", mil.In{"values": v, "axis": 0})
	})
	wantTensor(t, got, mil.Float16, []int{4, 2}, []float32{1, 2, 3, 4, 1, 2, 3, 4}, nil)
	// int concat of runtime and const parts, as Apple's begin/end vectors.
	got = runOp(t, []in{{"p", i32([]int{1}, 7)}}, func(b *mil.Builder, v []*mil.Var) *mil.Var {
		return b.Op("concat", "z", mil.In{"values": []*mil.Var{b.Const("c0", mil.Int32Vec(1, 0)), v[0], b.Const("c1", mil.Int32Vec(0))}, "axis": 0})
	})
	wantTensor(t, got, mil.Int32, []int{4}, nil, []int32{1, 0, 7, 0})

	x := f32([]int{2, 5}, seq(10, 0)...)
	b := mil.NewBuilder("main", mil.OpsetIOS18)
	xv := b.Input("x", milType(x))
	outs := b.OpN("split", "s", mil.In{"x": xv, "split_sizes": []int{2, 3}, "axis": 1})
	b.Output(outs...)
	res := runProgram(t, b, map[string]*Tensor{"x": x}, nil)
	wantTensor(t, res["s_0"], mil.Float32, []int{2, 2}, []float32{0, 1, 5, 6}, nil)
	wantTensor(t, res["s_1"], mil.Float32, []int{2, 3}, []float32{2, 3, 4, 7, 8, 9}, nil)
}

// runProgram finishes b as the only function "main" and runs it.
func runProgram(t *testing.T, b *mil.Builder, feed map[string]*Tensor, st *State) map[string]*Tensor {
	t.Helper()
	f, err := loadBuilt(b)
	if err != nil {
		t.Fatal(err)
	}
	res, err := f.Predict(feed, st)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func loadBuilt(bs ...*mil.Builder) (*Function, error) {
	p := mil.NewProgram()
	for _, b := range bs {
		fn, err := b.Function()
		if err != nil {
			return nil, err
		}
		p.Functions = append(p.Functions, fn)
	}
	m, err := Load(p)
	if err != nil {
		return nil, err
	}
	return m.Function(p.Functions[0].Name)
}

func TestSliceByIndex(t *testing.T) {
	x := f32([]int{3, 4}, seq(12, 0)...)
	tests := []struct {
		name  string
		p     mil.In
		shape []int
		want  []float32
	}{
		{"plain", mil.In{"begin": []int{1, 1}, "end": []int{3, 3}}, []int{2, 2}, []float32{5, 6, 9, 10}},
		{"negative", mil.In{"begin": []int{-2, -3}, "end": []int{-1, 4}}, []int{1, 3}, []float32{5, 6, 7}},
		{"masks", mil.In{"begin": []int{2, 2}, "end": []int{0, 0}, "begin_mask": []bool{true, false}, "end_mask": []bool{true, true}}, []int{3, 2}, []float32{2, 3, 6, 7, 10, 11}},
		{"stride", mil.In{"begin": []int{0, 0}, "end": []int{3, 4}, "stride": []int{2, 3}}, []int{2, 2}, []float32{0, 3, 8, 11}},
		{"reverse", mil.In{"begin": []int{0, -1}, "end": []int{1, 0}, "stride": []int{1, -1}, "end_mask": []bool{false, true}}, []int{1, 4}, []float32{3, 2, 1, 0}},
		{"squeeze", mil.In{"begin": []int{-1, 0}, "end": []int{0, 4}, "squeeze_mask": []bool{true, false}}, []int{4}, []float32{8, 9, 10, 11}},
		{"clamped", mil.In{"begin": []int{-10, 2}, "end": []int{10, 100}}, []int{3, 2}, []float32{2, 3, 6, 7, 10, 11}},
		{"empty", mil.In{"begin": []int{2, 0}, "end": []int{1, 4}}, []int{0, 4}, []float32{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := runOp(t, []in{{"x", x}}, func(b *mil.Builder, v []*mil.Var) *mil.Var {
				p := mil.In{"x": v[0]}
				for k, val := range tc.p {
					p[k] = val
				}
				return b.Op("slice_by_index", "z", p)
			})
			wantTensor(t, got, mil.Float32, tc.shape, tc.want, nil)
		})
	}
	// Runtime begin/end tensors.
	got := runOp(t, []in{{"x", x}, {"b", i32([]int{2}, 1, -2)}, {"e", i32([]int{2}, 2, 4)}}, func(b *mil.Builder, v []*mil.Var) *mil.Var {
		return b.Op("slice_by_index", "z", mil.In{"x": v[0], "begin": v[1], "end": v[2]})
	})
	wantTensor(t, got, mil.Float32, []int{1, 2}, []float32{6, 7}, nil)
	// slice_by_size with -1.
	got = runOp(t, []in{{"x", x}, {"b", i32([]int{2}, 1, 2)}}, func(b *mil.Builder, v []*mil.Var) *mil.Var {
		return b.Op("slice_by_size", "z", mil.In{"x": v[0], "begin": v[1], "size": []int{-1, 2}})
	})
	wantTensor(t, got, mil.Float32, []int{2, 2}, []float32{6, 7, 10, 11}, nil)
}

func TestSliceUpdate(t *testing.T) {
	x := f16([]int{2, 4}, seq(8, 0)...)
	got := runOp(t, []in{{"x", x}, {"u", f16([]int{2, 1}, 50, 60)}, {"b", i32([]int{2}, 0, 2)}, {"e", i32([]int{2}, 2, 3)}}, func(b *mil.Builder, v []*mil.Var) *mil.Var {
		return b.Op("slice_update", "z", mil.In{"x": v[0], "update": v[1], "begin": v[2], "end": v[3]})
	})
	wantTensor(t, got, mil.Float16, []int{2, 4}, []float32{0, 1, 50, 3, 4, 5, 60, 7}, nil)
	// Negative begin, stride 2, end mask.
	got = runOp(t, []in{{"x", x}, {"u", f16([]int{1, 2}, -1, -2)}}, func(b *mil.Builder, v []*mil.Var) *mil.Var {
		return b.Op("slice_update", "z", mil.In{"x": v[0], "update": v[1], "begin": []int{-1, 1}, "end": []int{0, 0}, "stride": []int{1, 2}, "end_mask": []bool{true, true}})
	})
	wantTensor(t, got, mil.Float16, []int{2, 4}, []float32{0, 1, 2, 3, 4, -1, 6, -2}, nil)
}

func TestGather(t *testing.T) {
	table := f16([]int{1, 4, 2}, seq(8, 0)...)
	idx := &Tensor{DType: mil.Int16, Shape: []int{3}, I: []int32{3, 0, 3}}
	got := runOp(t, []in{{"x", table}, {"i", idx}}, func(b *mil.Builder, v []*mil.Var) *mil.Var {
		return b.Op("gather", "z", mil.In{"x": v[0], "indices": v[1], "axis": 1, "batch_dims": 0, "validate_indices": false})
	})
	wantTensor(t, got, mil.Float16, []int{1, 3, 2}, []float32{6, 7, 0, 1, 6, 7}, nil)
	emb := f32([]int{3, 2}, seq(6, 10)...)
	got = runOp(t, []in{{"x", emb}, {"i", i32([]int{1, 2}, 2, 1)}}, func(b *mil.Builder, v []*mil.Var) *mil.Var {
		return b.Op("gather", "z", mil.In{"x": v[0], "indices": v[1], "axis": 0})
	})
	wantTensor(t, got, mil.Float32, []int{1, 2, 2}, []float32{14, 15, 12, 13}, nil)
	for _, bad := range []int32{-1, 3} {
		_, err := tryOp([]in{{"x", emb}, {"i", i32([]int{1}, bad)}}, func(b *mil.Builder, v []*mil.Var) *mil.Var {
			return b.Op("gather", "z", mil.In{"x": v[0], "indices": v[1], "axis": 0})
		})
		if err == nil {
			t.Fatalf("index %d: no error", bad)
		}
	}
	got = runOp(t, []in{{"x", emb}, {"i", i32([]int{3, 2}, 1, 0, 0, 0, 1, 1)}}, func(b *mil.Builder, v []*mil.Var) *mil.Var {
		return b.Op("gather_along_axis", "z", mil.In{"x": v[0], "indices": v[1], "axis": 1})
	})
	wantTensor(t, got, mil.Float32, []int{3, 2}, []float32{11, 10, 12, 12, 15, 15}, nil)
	got = runOp(t, []in{{"x", emb}, {"i", i32([]int{1, 2}, 2, 0)}}, func(b *mil.Builder, v []*mil.Var) *mil.Var {
		return b.Op("gather_along_axis", "z", mil.In{"x": v[0], "indices": v[1], "axis": 0})
	})
	wantTensor(t, got, mil.Float32, []int{1, 2}, []float32{14, 11}, nil)
}

func TestShapeOps(t *testing.T) {
	x := f32([]int{2, 3, 1}, seq(6, 0)...)
	tests := []struct {
		name  string
		build func(b *mil.Builder, x *mil.Var) *mil.Var
		shape []int
		want  []float32
	}{
		{"reshape -1", func(b *mil.Builder, x *mil.Var) *mil.Var {
			return b.Op("reshape", "z", mil.In{"x": x, "shape": []int{3, -1}})
		}, []int{3, 2}, seq(6, 0)},
		{"reshape 0", func(b *mil.Builder, x *mil.Var) *mil.Var {
			return b.Op("reshape", "z", mil.In{"x": x, "shape": []int{0, 3}})
		}, []int{2, 3}, seq(6, 0)},
		{"transpose", func(b *mil.Builder, x *mil.Var) *mil.Var {
			return b.Op("transpose", "z", mil.In{"x": x, "perm": []int{2, 1, 0}})
		}, []int{1, 3, 2}, []float32{0, 3, 1, 4, 2, 5}},
		{"expand_dims", func(b *mil.Builder, x *mil.Var) *mil.Var {
			return b.Op("expand_dims", "z", mil.In{"x": x, "axes": []int{0, -1}})
		}, []int{1, 2, 3, 1, 1}, seq(6, 0)},
		{"squeeze axes", func(b *mil.Builder, x *mil.Var) *mil.Var {
			return b.Op("squeeze", "z", mil.In{"x": x, "axes": []int{2}})
		}, []int{2, 3}, seq(6, 0)},
		{"squeeze all", func(b *mil.Builder, x *mil.Var) *mil.Var {
			e := b.Op("expand_dims", "e", mil.In{"x": x, "axes": []int{0}})
			return b.Op("squeeze", "z", mil.In{"x": e})
		}, []int{2, 3}, seq(6, 0)},
		{"tile", func(b *mil.Builder, x *mil.Var) *mil.Var {
			s := b.Op("slice_by_index", "s", mil.In{"x": x, "begin": []int{0, 0, 0}, "end": []int{2, 2, 1}})
			return b.Op("tile", "z", mil.In{"x": s, "reps": []int{1, 2, 2}})
		}, []int{2, 4, 2}, []float32{0, 0, 1, 1, 0, 0, 1, 1, 3, 3, 4, 4, 3, 3, 4, 4}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := runOp(t, []in{{"x", x}}, func(b *mil.Builder, v []*mil.Var) *mil.Var { return tc.build(b, v[0]) })
			wantTensor(t, got, mil.Float32, tc.shape, tc.want, nil)
		})
	}
}

func TestLinearMatmul(t *testing.T) {
	// linear: x [2,3] · W[2,3]ᵀ + b.
	x := f16([]int{1, 2, 3}, 1, 2, 3, 4, 5, 6)
	got := runOp(t, []in{{"x", x}}, func(b *mil.Builder, v []*mil.Var) *mil.Var {
		w := b.Const("w", mil.FP16FromFloat32([]int64{2, 3}, []float32{1, 0, -1, 0.5, 0.5, 0.5}))
		bias := b.Const("bias", mil.FP16FromFloat32([]int64{2}, []float32{10, 0}))
		return b.Op("linear", "z", mil.In{"x": v[0], "weight": w, "bias": bias})
	})
	wantTensor(t, got, mil.Float16, []int{1, 2, 2}, []float32{8, 3, 8, 7.5}, nil)
	// matmul with transpose_y and batch broadcast: x [2,1,2] · y[1,3,2]ᵀ.
	got = runOp(t, []in{{"x", f32([]int{2, 1, 2}, 1, 2, 3, 4)}, {"y", f32([]int{1, 3, 2}, 1, 0, 0, 1, 1, 1)}}, func(b *mil.Builder, v []*mil.Var) *mil.Var {
		return b.Op("matmul", "z", mil.In{"x": v[0], "y": v[1], "transpose_x": false, "transpose_y": true})
	})
	wantTensor(t, got, mil.Float32, []int{2, 1, 3}, []float32{1, 2, 3, 3, 4, 7}, nil)
	// transpose_x: xᵀ with x [2,2] stored as [[1,2],[3,4]] → [[1,3],[2,4]] · I.
	got = runOp(t, []in{{"x", f32([]int{2, 2}, 1, 2, 3, 4)}, {"y", f32([]int{2, 3}, 1, 0, 1, 0, 1, 1)}}, func(b *mil.Builder, v []*mil.Var) *mil.Var {
		return b.Op("matmul", "z", mil.In{"x": v[0], "y": v[1], "transpose_x": true})
	})
	wantTensor(t, got, mil.Float32, []int{2, 3}, []float32{1, 3, 4, 2, 4, 6}, nil)
	// fp16 output rounding of an fp32-accumulated dot: 2048 + 1 + 1 = 2050.
	got = runOp(t, []in{{"x", f16([]int{1, 3}, 2048, 1, 1)}, {"y", f16([]int{3, 1}, 1, 1, 1)}}, func(b *mil.Builder, v []*mil.Var) *mil.Var {
		return b.Op("matmul", "z", mil.In{"x": v[0], "y": v[1]})
	})
	wantTensor(t, got, mil.Float16, []int{1, 1}, []float32{2050}, nil)
}

func TestUnimplementedOp(t *testing.T) {
	b := mil.NewBuilder("main", mil.OpsetIOS18)
	x := b.Input("x", mil.TensorType(mil.Float16, 2))
	y := b.OpTyped("frobnicate", "z", mil.In{"x": x}, mil.TensorType(mil.Float16, 2))
	b.Output(y...)
	_, err := loadBuilt(b)
	if !errors.Is(err, ErrUnsupported) {
		t.Fatalf("err = %v, want ErrUnsupported", err)
	}
	for _, s := range []string{`"frobnicate"`, `"main"`} {
		if !contains(err.Error(), s) {
			t.Errorf("error %q does not name %s", err, s)
		}
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func TestRound1MatchesFP16(t *testing.T) {
	vals := []float32{0, 1, -1, 65504, 65519, 65520, -65520, 1e-8, 6e-5, 6.1e-5, 3e-7, float32(math.Inf(1)), float32(math.NaN()), 1 + 1.0/2048, 1 + 3.0/2048, 0.1, 3.14159}
	for i := uint32(0); i < 1<<20; i++ {
		vals = append(vals, math.Float32frombits(i*4099+i<<12))
	}
	for _, v := range vals {
		got, want := round1(v), fp16.Round(v)
		if math.Float32bits(got) != math.Float32bits(want) && !(got != got && want != want) {
			t.Fatalf("round1(%g) = %g, want %g", v, got, want)
		}
	}
}

// reshape without a usable shape fails with a message naming the problem.
func TestReshapeShapeErrors(t *testing.T) {
	x := f16([]int{2, 3}, 1, 2, 3, 4, 5, 6)
	for _, tc := range []struct {
		name  string
		shape *Tensor
		want  string
	}{
		{"absent", nil, "reshape needs a shape"},
		{"float", f16([]int{1}, 6), `reshape: parameter "shape" must be integer, is fp16`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := &node{args: map[string][]int{"x": {0}}, outs: []int{2}}
			if tc.shape != nil {
				n.args["shape"] = []int{1}
			}
			ctx := &execCtx{vals: []*Tensor{x, tc.shape, nil}, fbuf: make([][]float32, 3), ibuf: make([][]int32, 3)}
			err := opReshape(&call{ctx: ctx, n: n})
			if err == nil || err.Error() != tc.want {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}
