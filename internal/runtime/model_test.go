package runtime

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/anemll/anemll/internal/mil"
)

// buildKVWriter builds the ANEMLL cache pattern: read_state → slice_update
// at [slot, current_pos] → write_state → read_state → output the row.
func buildKVWriter(name string, slot int) *mil.Builder {
	b := mil.NewBuilder(name, mil.OpsetIOS18)
	x := b.Input("x", mil.TensorType(mil.Float16, 1, 1, 1, 4))
	pos := b.Input("current_pos", mil.TensorType(mil.Int32, 1))
	kv := b.Input("kv", mil.StateType(mil.TensorType(mil.Float16, 2, 1, 3, 4)))
	cache := b.Op("read_state", "r0", mil.In{"input": kv})
	begin := b.Op("concat", "begin", mil.In{"values": []*mil.Var{b.Const("b0", mil.Int32Vec(int32(slot), 0)), pos, b.Const("b3", mil.Int32Vec(0))}, "axis": 0})
	p1 := b.Op("add", "p1", mil.In{"x": pos, "y": 1})
	end := b.Op("concat", "end", mil.In{"values": []*mil.Var{b.Const("e0", mil.Int32Vec(int32(slot+1), 1)), p1, b.Const("e3", mil.Int32Vec(4))}, "axis": 0})
	up := b.Op("slice_update", "upd", mil.In{"x": cache, "update": x, "begin": begin, "end": end})
	b.OpN("write_state", "ws", mil.In{"input": kv, "data": up})
	again := b.Op("read_state", "r1", mil.In{"input": kv})
	row := b.Op("slice_by_index", "all", mil.In{"x": again, "begin": []int{0, 0, 0, 0}, "end": []int{2, 1, 3, 4}})
	b.Output(row)
	return b
}

func TestStateAcrossCallsAndFunctions(t *testing.T) {
	p := mil.NewProgram()
	for _, b := range []*mil.Builder{buildKVWriter("infer", 0), buildKVWriter("prefill", 1)} {
		fn, err := b.Function()
		if err != nil {
			t.Fatal(err)
		}
		p.Functions = append(p.Functions, fn)
	}
	m, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	infer, _ := m.Function("infer")
	prefill, _ := m.Function("prefill")
	for _, n := range infer.nodes {
		if n.op.Type == "slice_update" && !n.inplace {
			t.Error("slice_update of the state was not planned in place")
		}
	}
	st := prefill.NewState()
	if got := st.Tensor("kv"); got == nil || !equalInts(got.Shape, []int{2, 1, 3, 4}) || got.DType != mil.Float16 {
		t.Fatalf("NewState kv = %v", got)
	}
	run := func(f *Function, pos int32, v float32) []float32 {
		t.Helper()
		res, err := f.Predict(map[string]*Tensor{
			"x":           f16([]int{1, 1, 1, 4}, v, v+1, v+2, v+3),
			"current_pos": i32([]int{1}, pos),
		}, st)
		if err != nil {
			t.Fatal(err)
		}
		return res["all"].F
	}
	run(infer, 0, 10)
	run(infer, 2, 20)
	got := run(prefill, 1, 30) // other function, same State
	want := []float32{
		10, 11, 12, 13, 0, 0, 0, 0, 20, 21, 22, 23, // slot 0
		0, 0, 0, 0, 30, 31, 32, 33, 0, 0, 0, 0, // slot 1
	}
	wantTensor(t, &Tensor{DType: mil.Float16, Shape: []int{24}, F: got}, mil.Float16, []int{24}, want, nil)
	wantTensor(t, &Tensor{DType: mil.Float16, Shape: []int{24}, F: st.Tensor("kv").F}, mil.Float16, []int{24}, want, nil)
	// The returned output is a copy: later calls must not change it.
	run(infer, 1, 40)
	if got[4] != 0 {
		t.Fatalf("earlier output changed: %v", got)
	}
	// A State without the function's state is rejected.
	if _, err := infer.Predict(map[string]*Tensor{"x": f16([]int{1, 1, 1, 4}, 0, 0, 0, 0), "current_pos": i32([]int{1}, 0)}, nil); err == nil {
		t.Fatal("nil State accepted")
	}
}

// An earlier read of the state used after the write must keep the old
// value: the planner must not update in place then.
func TestStateSnapshotSemantics(t *testing.T) {
	b := mil.NewBuilder("main", mil.OpsetIOS18)
	x := b.Input("x", mil.TensorType(mil.Float16, 2))
	kv := b.Input("kv", mil.StateType(mil.TensorType(mil.Float16, 2)))
	old := b.Op("read_state", "old", mil.In{"input": kv})
	up := b.Op("slice_update", "upd", mil.In{"x": old, "update": x, "begin": []int{0}, "end": []int{2}})
	b.OpN("write_state", "ws", mil.In{"input": kv, "data": up})
	sum := b.Op("add", "sum", mil.In{"x": old, "y": x}) // uses the pre-write value
	b.Output(sum)
	f, err := loadBuilt(b)
	if err != nil {
		t.Fatal(err)
	}
	st := f.NewState()
	for i, want := range [][]float32{{1, 2}, {2, 4}} {
		res, err := f.Predict(map[string]*Tensor{"x": f16([]int{2}, 1, 2)}, st)
		if err != nil {
			t.Fatal(err)
		}
		wantTensor(t, res["sum"], mil.Float16, []int{2}, want, nil)
		wantTensor(t, st.Tensor("kv"), mil.Float16, []int{2}, []float32{1, 2}, nil)
		_ = i
	}
}

func TestInputValidation(t *testing.T) {
	b := mil.NewBuilder("main", mil.OpsetIOS18)
	ids := b.Input("input_ids", mil.TensorType(mil.Int32, 1, mil.Unknown))
	table := b.Const("table", mil.FP16FromFloat32([]int64{4, 2}, seq(8, 0)))
	g := b.Op("gather", "hidden", mil.In{"x": table, "indices": ids, "axis": 0})
	b.Output(g)
	f, err := loadBuilt(b)
	if err != nil {
		t.Fatal(err)
	}
	if in := f.Inputs(); len(in) != 1 || in[0].Name != "input_ids" {
		t.Fatalf("Inputs() = %v", in)
	}
	// Unknown dim accepts [1,1] and [1,3] (enumerated shapes).
	for _, n := range []int{1, 3} {
		ids := make([]int32, n)
		for i := range ids {
			ids[i] = int32(3 - i)
		}
		res, err := f.Predict(map[string]*Tensor{"input_ids": i32([]int{1, n}, ids...)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		want := []float32{6, 7, 4, 5, 2, 3}[:2*n]
		wantTensor(t, res["hidden"], mil.Float16, []int{1, n, 2}, want, nil)
	}
	bad := []struct {
		name string
		in   map[string]*Tensor
	}{
		{"missing", map[string]*Tensor{}},
		{"dtype", map[string]*Tensor{"input_ids": f16([]int{1, 1}, 0)}},
		{"rank", map[string]*Tensor{"input_ids": i32([]int{1}, 0)}},
		{"fixed dim", map[string]*Tensor{"input_ids": i32([]int{2, 1}, 0, 0)}},
		{"short data", map[string]*Tensor{"input_ids": {DType: mil.Int32, Shape: []int{1, 2}, I: []int32{0}}}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := f.Predict(tc.in, nil); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

// pack packs vals LSB-first, element i at bits [i·b, i·b+b).
func pack(vals []uint8, bits int) []byte {
	out := make([]byte, (len(vals)*bits+7)/8)
	for i, v := range vals {
		for k := 0; k < bits; k++ {
			if v>>k&1 == 1 {
				bit := i*bits + k
				out[bit/8] |= 1 << (bit % 8)
			}
		}
	}
	return out
}

func TestLUTDequant(t *testing.T) {
	for _, bits := range []int{4, 6} {
		t.Run(map[int]string{4: "uint4", 6: "uint6"}[bits], func(t *testing.T) {
			dt := map[int]mil.DType{4: mil.UInt4, 6: mil.UInt6}[bits]
			k := 1 << bits
			// Weight [4,3,1,1]: rows 0-1 use table 0, rows 2-3 table 1.
			idx := []uint8{0, 1, 2, 3, 4, uint8(k - 1), 5, 0, 7, uint8(k - 2), 1, 1}
			lut := make([]float32, 2*k)
			for i := 0; i < k; i++ {
				lut[i] = float32(i) * 0.5
				lut[k+i] = -float32(i)
			}
			// Hand-pack check for 4 bits: element 0 in the low nibble.
			raw := pack(idx, bits)
			if bits == 4 && (raw[0] != 0x10 || raw[2] != 0xf4) {
				t.Fatalf("packing: % x", raw)
			}
			iv := mil.NewTensor(dt, []int64{4, 3, 1, 1}, raw)
			lv := mil.FP16FromFloat32([]int64{2, 1, 1, 1, int64(k), 1}, lut)
			want := make([]float32, 12)
			for e, ix := range idx {
				tbl := e / 6
				want[e] = lut[tbl*k+int(ix)]
			}
			b := mil.NewBuilder("main", mil.OpsetIOS18)
			x := b.Input("x", mil.TensorType(mil.Float16, 1, 3, 1, 1))
			// Literal-bound (iOS18 form).
			w := b.Op("constexpr_lut_to_dense", "w", mil.In{"indices": mil.Literal{Value: iv}, "lut": mil.Literal{Value: lv}})
			// Const-bound form.
			ic := b.Const("w2_indices", iv)
			lc := b.Const("w2_lut", lv)
			w2 := b.Op("constexpr_lut_to_dense", "w2", mil.In{"indices": ic, "lut": lc})
			y := b.Op("conv", "y", mil.In{"x": x, "weight": w})
			y2 := b.Op("conv", "y2", mil.In{"x": x, "weight": w2})
			b.Output(y, y2)
			f, err := loadBuilt(b)
			if err != nil {
				t.Fatal(err)
			}
			// Dequantized once at load: the weight is a prepared constant.
			got := f.consts[f.nodes[0].args["weight"][0]]
			wantTensor(t, got, mil.Float16, []int{4, 3, 1, 1}, want, nil)
			res, err := f.Predict(map[string]*Tensor{"x": f16([]int{1, 3, 1, 1}, 1, 10, 100)}, nil)
			if err != nil {
				t.Fatal(err)
			}
			conv := make([]float32, 4)
			for o := 0; o < 4; o++ {
				conv[o] = r16(float64(want[o*3]) + 10*float64(want[o*3+1]) + 100*float64(want[o*3+2]))
			}
			wantTensor(t, res["y"], mil.Float16, []int{1, 4, 1, 1}, conv, nil)
			wantTensor(t, res["y2"], mil.Float16, []int{1, 4, 1, 1}, conv, nil)
		})
	}
}

// Two functions using the same LUT literal values (as a combined
// infer+prefill package does) get one dequantized tensor: the indices are
// read once and both weights share one backing slice.
func TestLUTSharedAcrossFunctions(t *testing.T) {
	reads := 0
	raw := pack([]uint8{0, 1, 1, 1, 0, 1}, 1)
	iv := mil.LazyTensor(mil.UInt1, []int64{2, 3}, func() ([]byte, error) { reads++; return raw, nil })
	lv := mil.FP16FromFloat32([]int64{1, 1, 2, 1}, []float32{0.5, -2})
	build := func(name string) *mil.Builder {
		b := mil.NewBuilder(name, mil.OpsetIOS18)
		x := b.Input("x", mil.TensorType(mil.Float16, 1, 3))
		w := b.Op("constexpr_lut_to_dense", "w", mil.In{"indices": mil.Literal{Value: iv}, "lut": mil.Literal{Value: lv}})
		b.Output(b.Op("linear", "y", mil.In{"x": x, "weight": w}))
		return b
	}
	p := mil.NewProgram()
	for _, b := range []*mil.Builder{build("infer"), build("prefill")} {
		fn, err := b.Function()
		if err != nil {
			t.Fatal(err)
		}
		p.Functions = append(p.Functions, fn)
	}
	m, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if reads != 1 {
		t.Errorf("indices read %d times, want 1", reads)
	}
	var ws []*Tensor
	for _, name := range []string{"infer", "prefill"} {
		f, err := m.Function(name)
		if err != nil {
			t.Fatal(err)
		}
		w := f.consts[f.nodes[0].args["weight"][0]]
		wantTensor(t, w, mil.Float16, []int{2, 3}, []float32{0.5, -2, -2, -2, 0.5, -2}, nil)
		ws = append(ws, w)
		res, err := f.Predict(map[string]*Tensor{"x": f16([]int{1, 3}, 1, 2, 4)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		wantTensor(t, res["y"], mil.Float16, []int{1, 2}, []float32{-11.5, -9}, nil)
	}
	if ws[0] != ws[1] || &ws[0].F[0] != &ws[1].F[0] {
		t.Error("the two functions' LUT weights do not share one tensor")
	}
}

func TestLUTVectorAxisAndErrors(t *testing.T) {
	// indices [2,2] uint1, lut [1,1,2,2]: each index selects a pair laid
	// along axis 0 → output [4,2].
	iv := mil.NewTensor(mil.UInt1, []int64{2, 2}, pack([]uint8{0, 1, 1, 0}, 1))
	lv := mil.FP16FromFloat32([]int64{1, 1, 2, 2}, []float32{1, 2, 3, 4})
	got, err := dequantLUT(iv, lv, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	// p=(0,0) idx0 → out[0,0]=1,out[1,0]=2; p=(0,1) idx1 → out[0,1]=3,out[1,1]=4;
	// p=(1,0) idx1 → out[2,0]=3,out[3,0]=4; p=(1,1) idx0 → out[2,1]=1,out[3,1]=2.
	wantTensor(t, got, mil.Float16, []int{4, 2}, []float32{1, 3, 2, 4, 3, 1, 4, 2}, nil)
	bad := []struct {
		name   string
		iv, lv *mil.Value
	}{
		{"entries", mil.NewTensor(mil.UInt2, []int64{2, 2}, []byte{0}), mil.FP16FromFloat32([]int64{1, 1, 2, 1}, []float32{1, 2})},
		{"rank", iv, mil.FP16FromFloat32([]int64{1, 2, 1}, []float32{1, 2})},
		{"divisible", mil.NewTensor(mil.UInt1, []int64{3, 1}, []byte{0}), mil.FP16FromFloat32([]int64{2, 1, 2, 1}, []float32{1, 2, 3, 4})},
		{"signed", mil.NewTensor(mil.Int8, []int64{2, 1}, []byte{0, 0}), mil.FP16FromFloat32([]int64{1, 1, 256, 1}, make([]float32, 256))},
		{"short", mil.NewTensor(mil.UInt4, []int64{4, 1}, []byte{0}), mil.FP16FromFloat32([]int64{1, 1, 16, 1}, make([]float32, 16))},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := dequantLUT(tc.iv, tc.lv, 0, false); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestLazyConstReadOnce(t *testing.T) {
	calls := 0
	data := mil.FP16FromFloat32([]int64{2, 2}, []float32{1, 2, 3, 4}).Data
	b := mil.NewBuilder("main", mil.OpsetIOS18)
	x := b.Input("x", mil.TensorType(mil.Float16, 1, 2))
	w := b.Const("w", mil.LazyTensor(mil.Float16, []int64{2, 2}, func() ([]byte, error) { calls++; return data, nil }))
	y := b.Op("linear", "y", mil.In{"x": x, "weight": w})
	b.Output(y)
	f, err := loadBuilt(b)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		res, err := f.Predict(map[string]*Tensor{"x": f16([]int{1, 2}, 1, 1)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		wantTensor(t, res["y"], mil.Float16, []int{1, 2}, []float32{3, 7}, nil)
	}
	if calls != 1 {
		t.Fatalf("Source called %d times, want 1", calls)
	}
	// A failing source is a load error.
	b = mil.NewBuilder("main", mil.OpsetIOS18)
	x = b.Input("x", mil.TensorType(mil.Float16, 1, 2))
	boom := errors.New("boom")
	w = b.Const("w", mil.LazyTensor(mil.Float16, []int64{2, 2}, func() ([]byte, error) { return nil, boom }))
	b.Output(b.Op("linear", "y", mil.In{"x": x, "weight": w}))
	if _, err := loadBuilt(b); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
}

// naiveConv is an independent reference: float64 accumulation over
// explicit padded coordinates.
func naiveConv(x []float32, xs []int, w []float32, ws []int, stride, dil, padB []int, groups int) ([]float64, []int) {
	n, cin, h, wd := xs[0], xs[1], xs[2], xs[3]
	cout, cpg, kh, kw := ws[0], ws[1], ws[2], ws[3]
	padA := padB
	oh := (h+2*padB[0]-(kh-1)*dil[0]-1)/stride[0] + 1
	ow := (wd+2*padB[1]-(kw-1)*dil[1]-1)/stride[1] + 1
	_ = padA
	out := make([]float64, n*cout*oh*ow)
	opg := cout / groups
	for b := 0; b < n; b++ {
		for co := 0; co < cout; co++ {
			g := co / opg
			for oy := 0; oy < oh; oy++ {
				for ox := 0; ox < ow; ox++ {
					var s float64
					for ci := 0; ci < cpg; ci++ {
						for ky := 0; ky < kh; ky++ {
							for kx := 0; kx < kw; kx++ {
								iy, ix := oy*stride[0]+ky*dil[0]-padB[0], ox*stride[1]+kx*dil[1]-padB[1]
								if iy < 0 || ix < 0 || iy >= h || ix >= wd {
									continue
								}
								s += float64(x[((b*cin+g*cpg+ci)*h+iy)*wd+ix]) * float64(w[((co*cpg+ci)*kh+ky)*kw+kx])
							}
						}
					}
					out[((b*cout+co)*oh+oy)*ow+ox] = s
				}
			}
		}
	}
	return out, []int{n, cout, oh, ow}
}

func randF(r *rand.Rand, n int) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = float32(r.NormFloat64())
	}
	return out
}

func TestConvAgainstNaive(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	tests := []struct {
		name                   string
		n, cin, h, w, cout, kh int
		kw, stride, dil, pad   int
		groups                 int
	}{
		{"1x1 decode", 1, 37, 1, 1, 29, 1, 1, 1, 1, 0, 1},
		{"1x1 prefill odd", 1, 33, 1, 7, 19, 1, 1, 1, 1, 0, 1},
		{"1x1 batch2 big", 2, 64, 1, 40, 130, 1, 1, 1, 1, 0, 1},
		{"3x3 pad", 1, 4, 5, 6, 3, 3, 3, 1, 1, 1, 1},
		{"strided dilated", 2, 6, 9, 8, 4, 2, 3, 2, 2, 1, 2},
		{"depthwise", 1, 4, 4, 4, 4, 3, 3, 1, 1, 1, 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			xs := []int{tc.n, tc.cin, tc.h, tc.w}
			ws := []int{tc.cout, tc.cin / tc.groups, tc.kh, tc.kw}
			x := f32(xs, randF(r, numel(xs))...)
			w := randF(r, numel(ws))
			want, oshape := naiveConv(x.F, xs, w, ws, []int{tc.stride, tc.stride}, []int{tc.dil, tc.dil}, []int{tc.pad, tc.pad}, tc.groups)
			got := runOp(t, []in{{"x", x}}, func(b *mil.Builder, v []*mil.Var) *mil.Var {
				wv := b.Const("w", mil.Float32s([]int64{int64(ws[0]), int64(ws[1]), int64(ws[2]), int64(ws[3])}, w))
				return b.Op("conv", "z", mil.In{"x": v[0], "weight": wv, "strides": []int{tc.stride, tc.stride}, "dilations": []int{tc.dil, tc.dil},
					"pad_type": "custom", "pad": []int{tc.pad, tc.pad, tc.pad, tc.pad}, "groups": tc.groups})
			})
			if !equalInts(got.Shape, oshape) {
				t.Fatalf("shape %v, want %v", got.Shape, oshape)
			}
			k := float64(ws[1] * tc.kh * tc.kw)
			for i := range want {
				if d := float64(got.F[i]) - want[i]; d > 1e-5*k || d < -1e-5*k {
					t.Fatalf("element %d = %v, want %v", i, got.F[i], want[i])
				}
			}
		})
	}
	// 1-D conv with same padding: x [1,1,5] * [1,1,3] ones.
	got := runOp(t, []in{{"x", f32([]int{1, 1, 5}, 1, 2, 3, 4, 5)}}, func(b *mil.Builder, v []*mil.Var) *mil.Var {
		wv := b.Const("w", mil.Float32s([]int64{1, 1, 3}, []float32{1, 1, 1}))
		bias := b.Const("bias", mil.Float32s([]int64{1}, []float32{100}))
		return b.Op("conv", "z", mil.In{"x": v[0], "weight": wv, "bias": bias, "pad_type": "same"})
	})
	wantTensor(t, got, mil.Float32, []int{1, 1, 5}, []float32{103, 106, 109, 112, 109}, nil)
}

func TestMatmulAgainstNaive(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	// Attention-shaped: [1,4,3,16]·[1,4,33,16]ᵀ and [1,4,3,33]·[1,4,33,16].
	q := f32([]int{1, 4, 3, 16}, randF(r, 4*3*16)...)
	k := f32([]int{1, 4, 33, 16}, randF(r, 4*33*16)...)
	got := runOp(t, []in{{"q", q}, {"k", k}}, func(b *mil.Builder, v []*mil.Var) *mil.Var {
		s := b.Op("matmul", "s", mil.In{"x": v[0], "y": v[1], "transpose_y": true})
		return b.Op("matmul", "z", mil.In{"x": s, "y": v[1]})
	})
	s := make([]float64, 4*3*33)
	for h := 0; h < 4; h++ {
		for i := 0; i < 3; i++ {
			for j := 0; j < 33; j++ {
				var acc float64
				for e := 0; e < 16; e++ {
					acc += float64(q.F[(h*3+i)*16+e]) * float64(k.F[(h*33+j)*16+e])
				}
				s[(h*3+i)*33+j] = float64(float32(acc))
			}
		}
	}
	for h := 0; h < 4; h++ {
		for i := 0; i < 3; i++ {
			for e := 0; e < 16; e++ {
				var acc float64
				for j := 0; j < 33; j++ {
					acc += s[(h*3+i)*33+j] * float64(k.F[(h*33+j)*16+e])
				}
				g := float64(got.F[(h*3+i)*16+e])
				if d := g - acc; d > 1e-3 || d < -1e-3 {
					t.Fatalf("[%d,%d,%d] = %v, want %v", h, i, e, g, acc)
				}
			}
		}
	}
}

func TestSDPA(t *testing.T) {
	// One query, two keys: scores q·k/√2 = [1/√2·2, 0]; mask the second.
	q := f32([]int{1, 1, 2}, 1, 1)
	k := f32([]int{1, 2, 2}, 1, 1, 0, 0)
	v := f32([]int{1, 2, 3}, 1, 2, 3, 10, 20, 30)
	got := runOp(t, []in{{"q", q}, {"k", k}, {"v", v}}, func(b *mil.Builder, vs []*mil.Var) *mil.Var {
		return b.Op("scaled_dot_product_attention", "z", mil.In{"query": vs[0], "key": vs[1], "value": vs[2]})
	})
	p1 := 1 / (1 + exp(-2/sqrt2))
	want := []float32{float32(p1*1 + (1-p1)*10), float32(p1*2 + (1-p1)*20), float32(p1*3 + (1-p1)*30)}
	for i := range want {
		if d := got.F[i] - want[i]; d > 1e-5 || d < -1e-5 {
			t.Fatalf("got %v, want %v", got.F, want)
		}
	}
	got = runOp(t, []in{{"q", q}, {"k", k}, {"v", v}, {"m", NewBool([]int{1, 2}, []bool{false, true})}}, func(b *mil.Builder, vs []*mil.Var) *mil.Var {
		return b.Op("scaled_dot_product_attention", "z", mil.In{"query": vs[0], "key": vs[1], "value": vs[2], "attn_mask": vs[3]})
	})
	wantTensor(t, got, mil.Float32, []int{1, 1, 3}, []float32{10, 20, 30}, nil)
}

const sqrt2 = 1.4142135623730951

func exp(x float64) float64 { return math.Exp(x) }

func TestGemmNNAgainstNaive(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, sz := range [][3]int{{1, 1, 1}, {1, 300, 3}, {5, 1, 9}, {3, 5, 0}, {7, 9, 13}, {2, 520, 33}, {1, 1000, 70}} {
		m, n, k := sz[0], sz[1], sz[2]
		a, b := randF(r, m*k), randF(r, k*n)
		want := make([]float32, m*n)
		gemmNNRef(want, a, b, m, n, k)
		got := make([]float32, m*n)
		for i := range got {
			got[i] = 12345
		}
		gemmNN(got, a, b, m, n, k)
		for i := range want {
			if d := got[i] - want[i]; d > 1e-4*float32(k+1) || d < -1e-4*float32(k+1) {
				t.Fatalf("%v: c[%d] = %v, want %v", sz, i, got[i], want[i])
			}
		}
	}
}

func TestDecodeValue(t *testing.T) {
	cases := []struct {
		name  string
		v     *mil.Value
		dt    mil.DType
		f     []float32
		ints  []int32
		fails bool
	}{
		{"fp16", mil.FP16FromFloat32([]int64{2}, []float32{1.5, -2}), mil.Float16, []float32{1.5, -2}, nil, false},
		{"fp32", mil.Float32s([]int64{2}, []float32{0.1, -3}), mil.Float32, []float32{0.1, -3}, nil, false},
		{"int32", mil.Int32Vec(-7, 1<<30), mil.Int32, nil, []int32{-7, 1 << 30}, false},
		{"int16", mil.NewTensor(mil.Int16, []int64{2}, []byte{0xff, 0xff, 0x00, 0x80}), mil.Int16, nil, []int32{-1, -32768}, false},
		{"uint16", mil.NewTensor(mil.UInt16, []int64{1}, []byte{0xff, 0xff}), mil.UInt16, nil, []int32{65535}, false},
		{"int8", mil.NewTensor(mil.Int8, []int64{2}, []byte{0x80, 5}), mil.Int8, nil, []int32{-128, 5}, false},
		{"uint8", mil.NewTensor(mil.UInt8, []int64{1}, []byte{0xff}), mil.UInt8, nil, []int32{255}, false},
		{"bool", mil.BoolVec(true, false), mil.Bool, nil, []int32{1, 0}, false},
		{"int4", mil.NewTensor(mil.Int4, []int64{3}, []byte{0x8f, 0x07}), mil.Int4, nil, []int32{-1, -8, 7}, false},
		{"uint2", mil.NewTensor(mil.UInt2, []int64{4}, []byte{0b11100100}), mil.UInt2, nil, []int32{0, 1, 2, 3}, false},
		{"short", mil.NewTensor(mil.Int32, []int64{2}, []byte{1, 0, 0, 0}), 0, nil, nil, true},
		{"int64", mil.NewTensor(mil.Int64, []int64{1}, make([]byte, 8)), 0, nil, nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeValue(tc.v)
			if tc.fails {
				if err == nil {
					t.Fatalf("accepted: %v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			wantTensor(t, got, tc.dt, toInts(tc.v.Type.Shape), tc.f, tc.ints)
		})
	}
	s, err := decodeValue(mil.ScalarString("same"))
	if err != nil || s.DType != mil.String || len(s.S) != 1 || s.S[0] != "same" {
		t.Fatalf("string: %v, %v", s, err)
	}
}

// An fp16 state is held as half bits (2 bytes a value) through every way
// a program writes it: in place (slice_update then write_state), by a
// fresh buffer (a read used after the write), and by write_state of a
// computed value; views of it feed kernels that read half (slice_by_index,
// gather) and kernels that get a widened copy (add, concat). fp32 and
// int32 states keep 4 bytes a value. Clone, CopyFrom and Reset keep the
// storage.
func TestStateStorage(t *testing.T) {
	for _, tc := range []struct {
		name  string
		dt    mil.DType
		bytes int64
	}{
		{"fp16", mil.Float16, 2 * 6},
		{"fp32", mil.Float32, 4 * 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			scalar := func(v float32) any {
				if tc.dt == mil.Float16 {
					return mil.F16(v)
				}
				return v
			}
			b := mil.NewBuilder("main", mil.OpsetIOS18)
			x := b.Input("x", mil.TensorType(tc.dt, 1, 2))
			kv := b.Input("kv", mil.StateType(mil.TensorType(tc.dt, 3, 2)))
			old := b.Op("read_state", "old", mil.In{"input": kv})
			flat := b.Op("reshape", "flat", mil.In{"x": old, "shape": []int{6}})
			// Row 0 += x (a widened read, written back by write_state of a new value).
			row0 := b.Op("slice_by_index", "row0", mil.In{"x": old, "begin": []int{0, 0}, "end": []int{1, 2}})
			acc := b.Op("add", "acc", mil.In{"x": row0, "y": x})
			up := b.Op("slice_update", "up", mil.In{"x": old, "update": acc, "begin": []int{0, 0}, "end": []int{1, 2}})
			b.OpN("write_state", "ws", mil.In{"input": kv, "data": up})
			// The pre-write value, used after the write: a widened copy.
			before := b.Op("add", "before", mil.In{"x": flat, "y": scalar(0.5)})
			cur := b.Op("read_state", "cur", mil.In{"input": kv})
			rows := b.Op("gather", "rows", mil.In{"x": cur, "indices": []int32{2, 0}, "axis": 0})
			both := b.Op("concat", "both", mil.In{"values": []*mil.Var{cur, x}, "axis": 0})
			// Row 2 = row 1 + 1: a write_state of a computed full value.
			r1 := b.Op("slice_by_index", "r1", mil.In{"x": both, "begin": []int{1, 0}, "end": []int{2, 2}})
			r2 := b.Op("add", "r2", mil.In{"x": r1, "y": scalar(1)})
			full := b.Op("concat", "full", mil.In{"values": []*mil.Var{b.Op("slice_by_index", "r01", mil.In{"x": both, "begin": []int{0, 0}, "end": []int{2, 2}}), r2}, "axis": 0})
			b.OpN("write_state", "ws2", mil.In{"input": kv, "data": full})
			b.Output(before, rows)
			f, err := loadBuilt(b)
			if err != nil {
				t.Fatal(err)
			}
			st := f.NewState()
			if got := st.Bytes(); got != tc.bytes {
				t.Fatalf("new state holds %d bytes, want %d", got, tc.bytes)
			}
			mk := func(v ...float32) *Tensor {
				if tc.dt == mil.Float16 {
					return f16([]int{1, 2}, v...)
				}
				return NewFloat32([]int{1, 2}, v)
			}
			var snap *State
			for i, want := range []struct{ before, rows, state []float32 }{
				{[]float32{0.5, 0.5, 0.5, 0.5, 0.5, 0.5}, []float32{0, 0, 1, 2}, []float32{1, 2, 0, 0, 1, 1}},
				{[]float32{1.5, 2.5, 0.5, 0.5, 1.5, 1.5}, []float32{1, 1, 2, 4}, []float32{2, 4, 0, 0, 1, 1}},
			} {
				res, err := f.Predict(map[string]*Tensor{"x": mk(1, 2)}, st)
				if err != nil {
					t.Fatal(err)
				}
				wantTensor(t, res["before"], tc.dt, []int{6}, want.before, nil)
				wantTensor(t, res["rows"], tc.dt, []int{2, 2}, want.rows, nil)
				wantTensor(t, st.Tensor("kv"), tc.dt, []int{3, 2}, want.state, nil)
				if got := st.Bytes(); got != tc.bytes {
					t.Fatalf("call %d: state holds %d bytes, want %d", i, got, tc.bytes)
				}
				if i == 0 {
					snap = st.Clone()
				}
			}
			if got := snap.Bytes(); got != tc.bytes {
				t.Fatalf("snapshot holds %d bytes, want %d", got, tc.bytes)
			}
			if err := st.CopyFrom(snap); err != nil {
				t.Fatal(err)
			}
			wantTensor(t, st.Tensor("kv"), tc.dt, []int{3, 2}, []float32{1, 2, 0, 0, 1, 1}, nil)
			st.Reset()
			wantTensor(t, st.Tensor("kv"), tc.dt, []int{3, 2}, make([]float32, 6), nil)
			if err := st.CopyFrom(&State{t: map[string]*Tensor{}}); err == nil {
				t.Fatal("CopyFrom accepted a snapshot of other states")
			}
		})
	}
}
