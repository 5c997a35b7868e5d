package runtime

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/anemll/anemll/internal/fp16"
	"github.com/anemll/anemll/internal/mil"
)

// layerDims are the LLaMA shapes of the benchmark layer.
type layerDims struct{ h, inter, heads, kvHeads, d, ctx int }

var benchDims = layerDims{h: 2048, inter: 8192, heads: 32, kvHeads: 8, d: 64, ctx: 512}

type layerWeights struct {
	q, k, v, o, gate, up, down, g1, g2 *mil.Value
}

func randWeights(r *rand.Rand, shape ...int64) *mil.Value {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	f := make([]float32, n)
	for i := range f {
		f[i] = float32(r.NormFloat64()) * 0.02
	}
	return mil.FP16FromFloat32(shape, f)
}

func newLayerWeights(dm layerDims) *layerWeights {
	r := rand.New(rand.NewPCG(7, 8))
	H, I, kv := int64(dm.h), int64(dm.inter), int64(dm.kvHeads*dm.d)
	ones := make([]float32, H)
	for i := range ones {
		ones[i] = 1
	}
	return &layerWeights{
		q: randWeights(r, H, H, 1, 1), k: randWeights(r, kv, H, 1, 1), v: randWeights(r, kv, H, 1, 1),
		o: randWeights(r, H, H), gate: randWeights(r, I, H, 1, 1), up: randWeights(r, I, H, 1, 1),
		down: randWeights(r, H, I, 1, 1), g1: mil.FP16FromFloat32([]int64{H}, ones), g2: mil.FP16FromFloat32([]int64{H}, ones),
	}
}

// buildLayer builds one ANEMLL-style decoder layer for T tokens: RMSNorm
// via layer_norm on [x, −x], 1×1 conv projections, RoPE, KV-cache update
// in a state, repeat_kv, manual softmax attention, linear o_proj, SiLU MLP.
func buildLayer(name string, dm layerDims, T int, w *layerWeights) *mil.Builder {
	H, d, nh, kvh, C := dm.h, dm.d, dm.heads, dm.kvHeads, dm.ctx
	b := mil.NewBuilder(name, mil.OpsetIOS18)
	x := b.Input("hidden_states", mil.TensorType(mil.Float16, 1, int64(T), int64(H)))
	cos := b.Input("cos", mil.TensorType(mil.Float16, 1, 1, int64(T), int64(d)))
	sin := b.Input("sin", mil.TensorType(mil.Float16, 1, 1, int64(T), int64(d)))
	mask := b.Input("causal_mask", mil.TensorType(mil.Float16, 1, 1, int64(T), int64(C)))
	pos := b.Input("current_pos", mil.TensorType(mil.Int32, 1))
	kv := b.Input("kv_cache", mil.StateType(mil.TensorType(mil.Float16, 2, int64(kvh), int64(C), int64(d))))
	rms := func(p string, x *mil.Var, g *mil.Value) *mil.Var {
		neg := b.Op("mul", p+"_neg", mil.In{"x": x, "y": mil.F16(-1)})
		cat := b.Op("concat", p+"_cat", mil.In{"values": []*mil.Var{x, neg}, "axis": -1})
		ln := b.Op("layer_norm", p+"_ln", mil.In{"x": cat, "axes": []int{-1}, "epsilon": mil.F16(1e-5)})
		sl := b.Op("slice_by_index", p+"_sl", mil.In{"x": ln, "begin": []int{0, 0, 0}, "end": []int{1, T, H}, "end_mask": []bool{true, true, false}})
		gm := b.Op("mul", p+"_g", mil.In{"x": sl, "y": b.Const(p+"_gamma", g)})
		tr := b.Op("transpose", p+"_tr", mil.In{"x": gm, "perm": []int{0, 2, 1}})
		return b.Op("expand_dims", p+"_ex", mil.In{"x": tr, "axes": []int{2}})
	}
	heads := func(p string, x *mil.Var, n int) *mil.Var {
		r := b.Op("reshape", p+"_rs", mil.In{"x": x, "shape": []int{1, n, d, T}})
		return b.Op("transpose", p+"_th", mil.In{"x": r, "perm": []int{0, 1, 3, 2}})
	}
	rope := func(p string, x *mil.Var, n int) *mil.Var {
		x1 := b.Op("slice_by_index", p+"_x1", mil.In{"x": x, "begin": []int{0, 0, 0, 0}, "end": []int{1, n, T, d / 2}})
		x2 := b.Op("slice_by_index", p+"_x2", mil.In{"x": x, "begin": []int{0, 0, 0, d / 2}, "end": []int{1, n, T, d}})
		nx2 := b.Op("mul", p+"_nx2", mil.In{"x": x2, "y": mil.F16(-1)})
		rot := b.Op("concat", p+"_rot", mil.In{"values": []*mil.Var{nx2, x1}, "axis": -1})
		a := b.Op("mul", p+"_a", mil.In{"x": x, "y": cos})
		c := b.Op("mul", p+"_c", mil.In{"x": rot, "y": sin})
		return b.Op("add", p+"_rope", mil.In{"x": a, "y": c})
	}
	conv := func(p string, x *mil.Var, wv *mil.Value) *mil.Var {
		return b.Op("conv", p, mil.In{"x": x, "weight": b.Const(p+"_w", wv)})
	}
	xn := rms("in", x, w.g1)
	q := rope("q", heads("q", conv("q_proj", xn, w.q), nh), nh)
	k := rope("k", heads("k", conv("k_proj", xn, w.k), kvh), kvh)
	v := heads("v", conv("v_proj", xn, w.v), kvh)
	// KV write at [slot, :, pos:pos+T, :].
	end := b.Op("add", "pos_end", mil.In{"x": pos, "y": T})
	cache := b.Op("read_state", "cache0", mil.In{"input": kv})
	for slot, val := range []*mil.Var{k, v} {
		p := fmt.Sprintf("kv%d", slot)
		bg := b.Op("concat", p+"_b", mil.In{"values": []*mil.Var{b.Const(p+"_b0", mil.Int32Vec(int32(slot), 0)), pos, b.Const(p+"_b3", mil.Int32Vec(0))}, "axis": 0})
		en := b.Op("concat", p+"_e", mil.In{"values": []*mil.Var{b.Const(p+"_e0", mil.Int32Vec(int32(slot+1), int32(kvh))), end, b.Const(p+"_e3", mil.Int32Vec(int32(d)))}, "axis": 0})
		up := b.Op("slice_update", p+"_upd", mil.In{"x": cache, "update": val, "begin": bg, "end": en})
		b.OpN("write_state", p+"_ws", mil.In{"input": kv, "data": up})
		cache = b.Op("read_state", p+"_read", mil.In{"input": kv})
	}
	rep := func(p string, slot int) *mil.Var {
		s := b.Op("slice_by_index", p+"_slot", mil.In{"x": cache, "begin": []int{slot, 0, 0, 0}, "end": []int{slot + 1, kvh, C, d}})
		r := b.Op("reshape", p+"_r1", mil.In{"x": s, "shape": []int{kvh, 1, C, d}})
		tl := b.Op("tile", p+"_tile", mil.In{"x": r, "reps": []int{1, nh / kvh, 1, 1}})
		return b.Op("reshape", p+"_r2", mil.In{"x": tl, "shape": []int{1, nh, C, d}})
	}
	K, V := rep("K", 0), rep("V", 1)
	sc := b.Op("matmul", "scores", mil.In{"x": q, "y": K, "transpose_y": true})
	sc = b.Op("mul", "scaled", mil.In{"x": sc, "y": mil.F16(0.125)})
	sc = b.Op("add", "masked", mil.In{"x": sc, "y": mask})
	mx := b.Op("reduce_max", "mx", mil.In{"x": sc, "axes": []int{-1}, "keep_dims": true})
	sh := b.Op("sub", "shift", mil.In{"x": sc, "y": mx})
	ex := b.Op("exp", "ex", mil.In{"x": sh})
	sm := b.Op("reduce_sum", "sm", mil.In{"x": ex, "axes": []int{-1}, "keep_dims": true})
	pr := b.Op("real_div", "probs", mil.In{"x": ex, "y": sm})
	att := b.Op("matmul", "att", mil.In{"x": pr, "y": V})
	att = b.Op("transpose", "att_t", mil.In{"x": att, "perm": []int{0, 2, 1, 3}})
	att = b.Op("reshape", "att_r", mil.In{"x": att, "shape": []int{1, T, H}})
	o := b.Op("linear", "o_proj", mil.In{"x": att, "weight": b.Const("o_w", w.o)})
	h1 := b.Op("add", "resid1", mil.In{"x": x, "y": o})
	hn := rms("post", h1, w.g2)
	gt := b.Op("silu", "gate_act", mil.In{"x": conv("gate", hn, w.gate)})
	m := b.Op("mul", "gu", mil.In{"x": gt, "y": conv("up", hn, w.up)})
	dn := conv("down", m, w.down)
	sq := b.Op("squeeze", "dn_sq", mil.In{"x": dn, "axes": []int{2}})
	tr := b.Op("transpose", "dn_t", mil.In{"x": sq, "perm": []int{0, 2, 1}})
	out := b.Op("add", "output_hidden_states", mil.In{"x": h1, "y": tr})
	b.Output(out)
	return b
}

func layerFeed(dm layerDims, T, pos int) map[string]*Tensor {
	r := rand.New(rand.NewPCG(9, uint64(T)))
	mask := make([]float32, T*dm.ctx)
	for i := 0; i < T; i++ {
		for j := pos + i + 1; j < dm.ctx; j++ {
			mask[i*dm.ctx+j] = -65504
		}
	}
	cs := make([]float32, T*dm.d)
	for i := range cs {
		cs[i] = 1
	}
	return map[string]*Tensor{
		"hidden_states": NewFloat16([]int{1, T, dm.h}, randF(r, T*dm.h)),
		"cos":           NewFloat16([]int{1, 1, T, dm.d}, cs),
		"sin":           NewFloat16([]int{1, 1, T, dm.d}, make([]float32, T*dm.d)),
		"causal_mask":   NewFloat16([]int{1, 1, T, dm.ctx}, mask),
		"current_pos":   NewInt32([]int{1}, []int32{int32(pos)}),
	}
}

func benchLayer(b *testing.B, T int) {
	w := newLayerWeights(benchDims)
	f, err := loadBuilt(buildLayer("layer", benchDims, T, w))
	if err != nil {
		b.Fatal(err)
	}
	st := f.NewState()
	feed := layerFeed(benchDims, T, 0)
	if _, err := f.Predict(feed, st); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := f.Predict(feed, st); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(T*b.N)/b.Elapsed().Seconds(), "tokens/s/layer")
}

// BenchmarkLayerDecode runs one decode step (1 token) of a LLaMA layer at
// hidden 2048 / intermediate 8192 / 32 heads / 8 kv heads / context 512.
func BenchmarkLayerDecode(b *testing.B) { benchLayer(b, 1) }

// BenchmarkLayerPrefill64 runs a 64-token prefill step of the same layer.
func BenchmarkLayerPrefill64(b *testing.B) { benchLayer(b, 64) }

func benchGemm(b *testing.B, m, n, k int, f func(c, a, bb []float32, m, n, k int)) {
	r := rand.New(rand.NewPCG(1, 1))
	a, bb, c := randF(r, m*k), randF(r, n*k), make([]float32, m*n)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f(c, a, bb, m, n, k)
	}
	b.ReportMetric(2*float64(m)*float64(n)*float64(k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}

// TestLayerPrefillMatchesDecode runs a small layer two ways: one 4-token
// prefill, and 4 single-token decode steps sharing a State. Each decode
// output must match the prefill row for the same position.
func TestLayerPrefillMatchesDecode(t *testing.T) {
	dm := layerDims{h: 32, inter: 64, heads: 4, kvHeads: 2, d: 8, ctx: 16}
	w := newLayerWeights(dm)
	p := mil.NewProgram()
	for _, bl := range []*mil.Builder{buildLayer("prefill", dm, 4, w), buildLayer("infer", dm, 1, w)} {
		fn, err := bl.Function()
		if err != nil {
			t.Fatal(err)
		}
		p.Functions = append(p.Functions, fn)
	}
	m, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	pf, _ := m.Function("prefill")
	inf, _ := m.Function("infer")
	feed := layerFeed(dm, 4, 0)
	for i := range feed["sin"].F { // a non-trivial rotation
		feed["sin"].F[i] = r16(0.25 * float64(i%dm.d))
	}
	st := pf.NewState()
	full, err := pf.Predict(feed, st)
	if err != nil {
		t.Fatal(err)
	}
	st2 := inf.NewState()
	for pos := 0; pos < 4; pos++ {
		one := layerFeed(dm, 1, pos)
		copy(one["hidden_states"].F, feed["hidden_states"].F[pos*dm.h:(pos+1)*dm.h])
		copy(one["sin"].F, feed["sin"].F[pos*dm.d:(pos+1)*dm.d])
		res, err := inf.Predict(one, st2)
		if err != nil {
			t.Fatal(err)
		}
		got, want := res["output_hidden_states"].F, full["output_hidden_states"].F[pos*dm.h:(pos+1)*dm.h]
		for i := range got {
			if d := got[i] - want[i]; d > 2e-3 || d < -2e-3 {
				t.Fatalf("pos %d element %d: decode %v, prefill %v", pos, i, got[i], want[i])
			}
		}
	}
	// Both paths wrote the same cache.
	a, b := st.Tensor("kv_cache").F, st2.Tensor("kv_cache").F
	for i := range a {
		if d := a[i] - b[i]; d > 1e-3 || d < -1e-3 {
			t.Fatalf("cache element %d: %v vs %v", i, a[i], b[i])
		}
	}
}

// BenchmarkGemmHalf runs the fp16-weight kernel on the projection shapes of
// BenchmarkGemm (weights n×k as half bits, m activation rows).
func BenchmarkGemmHalf(b *testing.B) {
	for _, s := range [][3]int{{256, 1, 2048}, {2048, 1, 2048}, {8192, 1, 2048}, {2048, 64, 2048}, {8192, 64, 2048}} {
		nw, nx, k := s[0], s[1], s[2]
		b.Run(fmt.Sprintf("%dx%dx%d", nw, nx, k), func(b *testing.B) {
			r := rand.New(rand.NewPCG(1, 1))
			h := make([]uint16, nw*k)
			for i, v := range randF(r, nw*k) {
				h[i] = uint16(fp16.FromFloat32(v))
			}
			x, c := randF(r, nx*k), make([]float32, nw*nx)
			b.SetBytes(int64(2 * nw * k))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				gemmHalf(c, h, x, nw, nx, k, true)
			}
			b.ReportMetric(2*float64(nw)*float64(nx)*float64(k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

// BenchmarkGemmLUT runs the packed-LUT kernel (4- and 6-bit indices, one
// palette per 8 rows) on the decode and prefill projection shapes.
func BenchmarkGemmLUT(b *testing.B) {
	defer func(f bool) { fuseLUT = f }(fuseLUT)
	for _, bits := range []int{4, 6, -4} {
		for _, s := range [][3]int{{8192, 1, 2048}, {2048, 1, 8192}, {8192, 64, 2048}} {
			nw, nx, k := s[0], s[1], s[2]
			name := fmt.Sprintf("lut%d_%dx%dx%d", bits, nw, nx, k)
			if fuseLUT = bits > 0; bits < 0 {
				bits, name = -bits, fmt.Sprintf("lut%d_decoded_rows_%dx%dx%d", -bits, nw, nx, k)
				if nx > 1 {
					continue
				}
			}
			b.Run(name, func(b *testing.B) {
				r := rand.New(rand.NewPCG(1, 1))
				w := randLUTWeight(r, bits, nw, k, 8)
				x, c := randF(r, nx*k), make([]float32, nw*nx)
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					gemmPacked(c, packedRows{lut: w}, x, nw, nx, k, true)
				}
				b.ReportMetric(float64(nw)*float64(k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "Gweights/s")
			})
		}
	}
}
