package runtime

import (
	"math/rand/v2"
	"testing"

	"github.com/anemll/anemll/internal/bitpack"
	"github.com/anemll/anemll/internal/fp16"
	"github.com/anemll/anemll/internal/mil"
)

// randLUTWeight returns a random rows×k LUT weight with bits-wide indices
// and one random fp16 palette per rowsPerTable rows.
func randLUTWeight(r *rand.Rand, bits, rows, k, rowsPerTable int) *lutWeight {
	idx := make([]uint8, rows*k)
	for i := range idx {
		idx[i] = uint8(r.IntN(1 << bits))
	}
	tab := make([]float32, rows/rowsPerTable<<bits)
	for i := range tab {
		tab[i] = fp16.Round(float32(r.NormFloat64()) * 0.05)
	}
	s := &lutSpec{bits: bits, dims: []int{rows, k}, groups: []int{rows / rowsPerTable, 1}, vs: 1,
		lut: &Tensor{DType: mil.Float16, Shape: []int{rows / rowsPerTable, 1, 1 << bits, 1}, F: tab}, raw: bitpack.Pack(nil, idx, bits)}
	return s.weight()
}

// denseOf dequantizes w the slow way: element by element.
func denseOf(w *lutWeight) []float32 {
	idx, err := bitpack.Unpack(nil, w.packed, w.rows*w.k, w.bits)
	if err != nil {
		panic(err)
	}
	out := make([]float32, len(idx))
	for e, v := range idx {
		out[e] = w.table[(e/w.k/w.rowsPerTable)<<w.bits+int(v)]
	}
	return out
}

// The packed-LUT kernels give exactly what gemmHalf gives on the same
// weight as half bits, for every index width, odd row lengths and
// element ranges that start mid-byte, on the SIMD and plain-Go paths.
func TestGemmLUTMatchesHalf(t *testing.T) {
	defer setSIMD(useSIMD)()
	paths := []bool{false}
	if haveSIMD {
		paths = append(paths, true)
	}
	r := rand.New(rand.NewPCG(3, 4))
	for _, simd := range paths {
		setSIMD(simd)
		for _, bits := range []int{1, 2, 3, 4, 6, 8} {
			for _, dims := range [][3]int{{16, 1, 24}, {16, 1, 48}, {8, 1, 40}, {16, 1, 44}, {72, 1, 37}, {72, 5, 37}, {136, 64, 33}, {8, 3, 1}} {
				nw, nx, k := dims[0], dims[1], dims[2]
				w := randLUTWeight(r, bits, nw, k, 8)
				dense := denseOf(w)
				h := make([]uint16, len(dense))
				for i, v := range dense {
					h[i] = uint16(fp16.FromFloat32(v))
				}
				// widen over arbitrary ranges.
				for _, rg := range [][2]int{{0, len(dense)}, {1, len(dense) - 1}, {k - 1, min(3*k+1, len(dense))}} {
					got := make([]float32, rg[1]-rg[0])
					w.widen(got, rg[0])
					for i, v := range got {
						if v != dense[rg[0]+i] {
							t.Fatalf("bits %d %v: widen from %d: element %d = %v, want %v", bits, dims, rg[0], i, v, dense[rg[0]+i])
						}
					}
				}
				x := randF(r, nx*k)
				for _, wRows := range []bool{true, false} {
					got, want := make([]float32, nw*nx), make([]float32, nw*nx)
					gemmPacked(got, packedRows{lut: w}, x, nw, nx, k, wRows)
					gemmHalf(want, h, x, nw, nx, k, wRows)
					for i := range got {
						if got[i] != want[i] {
							t.Fatalf("simd %v bits %d %v wRows %v: c[%d] = %v, want %v", simd, bits, dims, wRows, i, got[i], want[i])
						}
					}
				}
			}
		}
	}
}

// Buffers reused by liveness give the results of one buffer per value, on
// a decoder layer's prefill and decode functions, with far fewer buffers.
func TestBuffersReusedByLiveness(t *testing.T) {
	dm := layerDims{h: 64, inter: 128, heads: 4, kvHeads: 2, d: 16, ctx: 16}
	w := newLayerWeights(dm)
	for _, T := range []int{1, 4} {
		f, err := loadBuilt(buildLayer("layer", dm, T, w))
		if err != nil {
			t.Fatal(err)
		}
		g, err := loadBuilt(buildLayer("layer", dm, T, w))
		if err != nil {
			t.Fatal(err)
		}
		outs := 0
		for _, n := range g.nodes {
			outs += len(n.outs)
		}
		if f.nbuf*3 > outs {
			t.Errorf("T=%d: %d buffers for %d op outputs", T, f.nbuf, outs)
		}
		for i := range g.buf {
			g.buf[i] = i // one buffer per slot
		}
		g.nbuf = len(g.buf)
		sf, sg := f.NewState(), g.NewState()
		for pos := 0; pos < 3; pos++ {
			feed := layerFeed(dm, T, pos*T)
			a, err := f.Predict(feed, sf)
			if err != nil {
				t.Fatal(err)
			}
			b, err := g.Predict(feed, sg)
			if err != nil {
				t.Fatal(err)
			}
			x, y := a["output_hidden_states"].F, b["output_hidden_states"].F
			for i := range x {
				if x[i] != y[i] {
					t.Fatalf("T=%d step %d: element %d = %v with reuse, %v without", T, pos, i, x[i], y[i])
				}
			}
		}
		x, y := sf.Tensor("kv_cache").F, sg.Tensor("kv_cache").F
		for i := range x {
			if x[i] != y[i] {
				t.Fatalf("T=%d: cache element %d differs", T, i)
			}
		}
	}
}

// Load keeps each large weight in the form its uses read: LUT weights of
// linear and 1×1 conv as packed indices, fp16 weights and gather tables as
// half bits, and decodes to fp32 the ones another op reads or a function
// returns; every form gives the outputs of all-fp32 weights.
func TestWeightForms(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	const rows, k = 64, 96 // 6144 elements ≥ halfWeightMin
	lutVal := func(bits int) (*mil.Value, *mil.Value) {
		idx := make([]uint8, rows*k)
		for i := range idx {
			idx[i] = uint8(r.IntN(1 << bits))
		}
		tab := make([]float32, rows/8<<bits)
		for i := range tab {
			tab[i] = float32(r.NormFloat64()) * 0.1
		}
		iv := mil.NewTensor([]mil.DType{4: mil.UInt4, 6: mil.UInt6}[bits], []int64{rows, k}, pack(idx, bits))
		return iv, mil.FP16FromFloat32([]int64{rows / 8, 1, 1 << bits, 1}, tab)
	}
	i4, l4 := lutVal(4)
	i6, l6 := lutVal(6)
	i6b, l6b := lutVal(6)
	wFP := mil.FP16FromFloat32([]int64{rows, k}, randF(r, rows*k))
	table := mil.FP16FromFloat32([]int64{rows, k}, randF(r, rows*k))
	other := mil.FP16FromFloat32([]int64{rows, k}, randF(r, rows*k))
	xv := randF(r, 3*k)
	build := func() *mil.Builder {
		b := mil.NewBuilder("main", mil.OpsetIOS18)
		x := b.Input("x", mil.TensorType(mil.Float16, 1, 3, int64(k)))
		ids := b.Input("ids", mil.TensorType(mil.Int32, 1, 2))
		w4 := b.Op("constexpr_lut_to_dense", "w4", mil.In{"indices": mil.Literal{Value: i4}, "lut": mil.Literal{Value: l4}})
		w6 := b.Op("constexpr_lut_to_dense", "w6", mil.In{"indices": mil.Literal{Value: i6}, "lut": mil.Literal{Value: l6}})
		w6b := b.Op("constexpr_lut_to_dense", "w6b", mil.In{"indices": mil.Literal{Value: i6b}, "lut": mil.Literal{Value: l6b}})
		y4 := b.Op("linear", "y4", mil.In{"x": x, "weight": w4})
		y6 := b.Op("linear", "y6", mil.In{"x": x, "weight": w6})
		// w6b is also read by an elementwise op: dense.
		y6b := b.Op("linear", "y6b", mil.In{"x": x, "weight": w6b})
		m6b := b.Op("mul", "m6b", mil.In{"x": w6b, "y": mil.F16(2)})
		yf := b.Op("linear", "yf", mil.In{"x": x, "weight": b.Const("wf", wFP)})
		g := b.Op("gather", "g", mil.In{"x": b.Const("table", table), "indices": ids, "axis": 0})
		o := b.Const("other", other) // returned as is: dense
		b.Output(y4, y6, y6b, m6b, yf, g, o)
		return b
	}
	run := func(packed bool) (map[string]*Tensor, *Function) {
		defer func(h bool) { halfWeights = h }(halfWeights)
		halfWeights = packed
		f, err := loadBuilt(build())
		if err != nil {
			t.Fatal(err)
		}
		out, err := f.Predict(map[string]*Tensor{"x": NewFloat16([]int{1, 3, k}, xv), "ids": NewInt32([]int{1, 2}, []int32{5, 63})}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return out, f
	}
	got, f := run(true)
	want, _ := run(false)
	for name, w := range want {
		wantTensor(t, got[name], w.DType, w.Shape, w.F, nil)
	}
	// Forms, found through the op that binds each constant.
	bound := func(op, param string) *Tensor {
		for _, n := range f.nodes {
			if n.op.Name == op {
				return f.consts[n.args[param][0]]
			}
		}
		t.Fatalf("no op %q", op)
		return nil
	}
	check := func(what string, c *Tensor, form string) {
		var have string
		switch {
		case c.lut != nil && c.F == nil && c.half == nil:
			have = "lut"
		case c.half != nil && c.F == nil && c.lut == nil:
			have = "half"
		case c.F != nil && c.half == nil && c.lut == nil:
			have = "fp32"
		default:
			have = "mixed"
		}
		if have != form {
			t.Errorf("%s is held as %s, want %s", what, have, form)
		}
	}
	check("LUT4 linear weight", bound("y4", "weight"), "lut")
	check("LUT6 linear weight", bound("y6", "weight"), "lut")
	check("LUT6 weight also read by mul", bound("y6b", "weight"), "fp32")
	check("fp16 linear weight", bound("yf", "weight"), "half")
	check("gather table", bound("g", "x"), "half")
	check("returned constant", f.consts[f.outSlot[6]], "fp32")
}
