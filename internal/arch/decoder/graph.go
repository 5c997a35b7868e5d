package decoder

import (
	"fmt"
	"math"
	"strconv"

	"github.com/anemll/anemll/internal/arch"
	"github.com/anemll/anemll/internal/coreml"
	"github.com/anemll/anemll/internal/mil"
)

// fn builds one MIL function of a package.
type fn struct {
	c  *Converter
	b  *mil.Builder
	ws *weightSet
}

func (f *fn) name(prefix string) string { return f.b.UniqueName(prefix) }

func (f *fn) op(opType, prefix string, in mil.In) *mil.Var {
	return f.b.Op(opType, f.name(prefix), in)
}

func (f *fn) i32(prefix string, v ...int) *mil.Var {
	x := make([]int32, len(v))
	for i, e := range v {
		x[i] = int32(e)
	}
	return f.b.Const(f.name(prefix), mil.Int32Vec(x...))
}

// rmsNorm is ANEMLL's RMSNorm over the last axis of x (size D): layer_norm
// over concat([x, −x]) (whose mean is 0, so it divides by the root mean
// square), keep the first half, scale by gamma (1 + w for families with
// NormPlusOne). residual says x is the residual stream, which --fp16-scale
// multiplies by α: its epsilon is then scaled by α² so the norm computes
// the same function. out names the result ("" for automatic).
func (f *fn) rmsNorm(x *mil.Var, gamma string, residual bool, pfx, out string) *mil.Var {
	eps := f.c.cfg.RMSNormEps
	if a := f.c.opts.ResidualScale; residual && a != 0 {
		eps *= a * a
	}
	shape := x.Type.Shape
	D := shape[len(shape)-1]
	neg := f.op("mul", pfx+"_neg", mil.In{"x": x, "y": mil.F16(-1)})
	cat := f.op("concat", pfx+"_cat", mil.In{"values": []*mil.Var{x, neg}, "axis": -1, "interleave": false})
	ln := f.op("layer_norm", pfx+"_ln", mil.In{"x": cat, "axes": []int{-1}, "epsilon": mil.F16(eps)})
	begin, end := make([]int, len(shape)), make([]int, len(shape))
	for i, d := range shape {
		end[i] = int(d)
	}
	half := f.op("slice_by_index", pfx+"_half", mil.In{"x": ln, "begin": begin, "end": end})
	g := f.ws.vector(f.b, milName(gamma), tensorRef{Name: gamma, Shape: []int64{D}, PlusOne: f.c.spec.Family.NormPlusOne})
	if out == "" {
		out = f.name(pfx)
	}
	return f.b.Op("mul", out, mil.In{"x": half, "y": g})
}

// qkNorm applies the family's per-head q/k RMSNorm to x [1,n,T,d], if it
// has one.
func (f *fn) qkNorm(x *mil.Var, gamma, pfx string) *mil.Var {
	if !f.c.spec.Family.QKNorm {
		return x
	}
	return f.rmsNorm(x, gamma, false, pfx, "")
}

// softcap is Gemma's tanh(x / c) · c.
func (f *fn) softcap(x *mil.Var, c float64, pfx string) *mil.Var {
	y := f.op("mul", pfx+"_in", mil.In{"x": x, "y": mil.F16(1 / c)})
	y = f.op("tanh", pfx+"_tanh", mil.In{"x": y})
	return f.op("mul", pfx, mil.In{"x": y, "y": mil.F16(c)})
}

// toChannels turns [1,T,H] into the conv layout [1,H,1,T].
func (f *fn) toChannels(x *mil.Var, pfx string) *mil.Var {
	t := f.op("transpose", pfx+"_t", mil.In{"x": x, "perm": []int{0, 2, 1}})
	return f.op("expand_dims", pfx+"_4d", mil.In{"x": t, "axes": []int{2}})
}

// conv1x1 applies the HF linear layer hf (weight [out,in]) as a 1×1 conv
// on [1,in,1,T], with its bias when bias is set.
func (f *fn) conv1x1(x *mil.Var, hf string, out, in int64, bias bool, pfx string) *mil.Var {
	w := f.ws.matrix(f.b, milName(hf+".weight"), tensorRef{Name: hf + ".weight", Shape: []int64{out, in, 1, 1}})
	args := mil.In{"x": x, "weight": w, "strides": []int{1, 1}, "pad_type": "valid",
		"pad": []int{0, 0, 0, 0}, "dilations": []int{1, 1}, "groups": 1}
	if bias {
		args["bias"] = f.ws.vector(f.b, milName(hf+".bias"), tensorRef{Name: hf + ".bias", Shape: []int64{out}})
	}
	return f.op("conv", pfx, args)
}

// heads reshapes a conv output [1,n·d,1,T] to [1,n,T,d].
func (f *fn) heads(x *mil.Var, n, T int, pfx string) *mil.Var {
	d := f.c.cfg.HeadDim
	if T == 1 {
		return f.op("reshape", pfx+"_heads", mil.In{"x": x, "shape": []int{1, n, 1, d}})
	}
	r := f.op("reshape", pfx+"_heads", mil.In{"x": x, "shape": []int{1, n, d, T}})
	return f.op("transpose", pfx+"_heads_t", mil.In{"x": r, "perm": []int{0, 1, 3, 2}})
}

// rope rotates x [1,n,T,d] by half-width cos/sin [1,1,T,d/2]:
// concat(x1·cos − x2·sin, x2·cos + x1·sin).
func (f *fn) rope(x, cos, sin *mil.Var, pfx string) *mil.Var {
	s := x.Type.Shape
	n, T, d := int(s[1]), int(s[2]), int(s[3])
	x1 := f.op("slice_by_index", pfx+"_x1", mil.In{"x": x, "begin": []int{0, 0, 0, 0}, "end": []int{1, n, T, d / 2}})
	x2 := f.op("slice_by_index", pfx+"_x2", mil.In{"x": x, "begin": []int{0, 0, 0, d / 2}, "end": []int{1, n, T, d}})
	a := f.op("mul", pfx+"_x1c", mil.In{"x": x1, "y": cos})
	b := f.op("mul", pfx+"_x2s", mil.In{"x": x2, "y": sin})
	lo := f.op("sub", pfx+"_lo", mil.In{"x": a, "y": b})
	c := f.op("mul", pfx+"_x2c", mil.In{"x": x2, "y": cos})
	e := f.op("mul", pfx+"_x1s", mil.In{"x": x1, "y": sin})
	hi := f.op("add", pfx+"_hi", mil.In{"x": c, "y": e})
	return f.op("concat", pfx+"_rot", mil.In{"values": []*mil.Var{lo, hi}, "axis": -1, "interleave": false})
}

// decoderIO holds the inputs shared by the layers of one decoder function.
type decoderIO struct {
	T        int
	state    *mil.Var
	mask     *mil.Var
	pos, end *mil.Var // current_pos and current_pos+T, int32 [1]
	// rope returns RoPE table i's half-width cos and sin [1,1,T,d/2].
	rope func(i int) (cos, sin *mil.Var)
	// window returns the mask of a sliding window of w positions.
	window func(w int) *mil.Var
}

// layer appends decoder layer l (global index) to x [1,T,H]. With skipMLP
// the layer stops after attention (ANEMLL's last prefill layer). out names
// the layer's result ("" for automatic).
func (f *fn) layer(l int, x *mil.Var, io *decoderIO, skipMLP bool, out string) *mil.Var {
	cfg := f.c.cfg
	H, I := int64(cfg.HiddenSize), int64(cfg.IntermediateSize)
	nH, kvH, d := cfg.NumAttentionHeads, cfg.NumKeyValueHeads, cfg.HeadDim
	L, C, T := cfg.NumHiddenLayers, f.c.opts.ContextLength, io.T
	p := fmt.Sprintf("layers_%d", l)
	hp := fmt.Sprintf("model.layers.%d.", l)

	h := f.rmsNorm(x, hp+"input_layernorm.weight", true, p+"_attn_norm", "")
	hc := f.toChannels(h, p+"_attn_in")
	sp := f.c.spec
	la := sp.Layers[l]
	bias := sp.Biases
	q := f.conv1x1(hc, hp+"self_attn.q_proj", int64(nH*d), H, bias.QKV, p+"_q")
	k := f.conv1x1(hc, hp+"self_attn.k_proj", int64(kvH*d), H, bias.QKV, p+"_k")
	v := f.conv1x1(hc, hp+"self_attn.v_proj", int64(kvH*d), H, bias.QKV, p+"_v")
	cos, sin := io.rope(f.c.ropeOf[l])
	q = f.rope(f.qkNorm(f.heads(q, nH, T, p+"_q"), hp+"self_attn.q_norm.weight", p+"_q_norm"), cos, sin, p+"_q")
	k = f.rope(f.qkNorm(f.heads(k, kvH, T, p+"_k"), hp+"self_attn.k_norm.weight", p+"_k_norm"), cos, sin, p+"_k")
	v = f.heads(v, kvH, T, p+"_v")

	// KV write: K at slot l, V at slot L+l, positions current_pos..+T.
	cache := io.state
	var cur *mil.Var
	for i, upd := range []*mil.Var{k, v} {
		slot := l + i*L
		begin := f.op("concat", fmt.Sprintf("%s_kv%d_begin", p, i), mil.In{"values": []*mil.Var{
			f.i32(p+"_slot", slot, 0), io.pos, f.i32(p+"_zero", 0)}, "axis": 0, "interleave": false})
		end := f.op("concat", fmt.Sprintf("%s_kv%d_end", p, i), mil.In{"values": []*mil.Var{
			f.i32(p+"_slot_end", slot+1, kvH), io.end, f.i32(p+"_hd", d)}, "axis": 0, "interleave": false})
		r := f.op("read_state", p+"_cache", mil.In{"input": cache})
		u := f.op("slice_update", fmt.Sprintf("%s_cache_upd%d", p, i), mil.In{"x": r, "update": upd, "begin": begin, "end": end})
		f.b.OpN("write_state", f.name(fmt.Sprintf("%s_cache_upd%d_write_state", p, i)), mil.In{"input": cache, "data": u})
	}
	cur = f.op("read_state", p+"_cache", mil.In{"input": cache})

	// Read this layer's K/V over the context window and repeat for GQA.
	groups := nH / kvH
	kvRead := func(slot int, pfx string) *mil.Var {
		s := f.op("slice_by_index", pfx, mil.In{"x": cur, "begin": []int{slot, 0, 0, 0}, "end": []int{slot + 1, kvH, C, d}})
		if groups == 1 {
			return s
		}
		r := f.op("reshape", pfx+"_g", mil.In{"x": s, "shape": []int{kvH, 1, C, d}})
		t := f.op("tile", pfx+"_rep", mil.In{"x": r, "reps": []int{1, groups, 1, 1}})
		return f.op("reshape", pfx+"_heads", mil.In{"x": t, "shape": []int{1, nH, C, d}})
	}
	kc := kvRead(l, p+"_k_cache")
	vc := kvRead(L+l, p+"_v_cache")

	// Attention with an explicit softmax.
	sc := f.op("matmul", p+"_scores", mil.In{"x": q, "y": kc, "transpose_x": false, "transpose_y": true})
	sc = f.op("mul", p+"_scaled", mil.In{"x": sc, "y": mil.F16(sp.AttnScale)})
	if c := sp.AttnSoftcap; c > 0 {
		sc = f.softcap(sc, c, p+"_softcap")
	}
	mask := io.mask
	if f.c.windowed(la.Window) {
		mask = io.window(la.Window)
	}
	sc = f.op("add", p+"_masked", mil.In{"x": sc, "y": mask})
	mx := f.op("reduce_max", p+"_max", mil.In{"x": sc, "axes": []int{-1}, "keep_dims": true})
	ex := f.op("exp", p+"_exp", mil.In{"x": f.op("sub", p+"_shift", mil.In{"x": sc, "y": mx})})
	sm := f.op("reduce_sum", p+"_sum", mil.In{"x": ex, "axes": []int{-1}, "keep_dims": true})
	pr := f.op("real_div", p+"_probs", mil.In{"x": ex, "y": sm})
	ao := f.op("matmul", p+"_attn", mil.In{"x": pr, "y": vc, "transpose_x": false, "transpose_y": false})
	ao = f.op("transpose", p+"_attn_t", mil.In{"x": ao, "perm": []int{0, 2, 1, 3}})
	ao = f.op("reshape", p+"_attn_flat", mil.In{"x": ao, "shape": []int{1, T, nH * d}})
	oArgs := mil.In{"x": ao, "weight": f.ws.matrix(f.b, milName(hp+"self_attn.o_proj.weight"),
		tensorRef{Name: hp + "self_attn.o_proj.weight", Shape: []int64{H, int64(nH * d)}})}
	if bias.O {
		oArgs["bias"] = f.ws.vector(f.b, milName(hp+"self_attn.o_proj.bias"), tensorRef{Name: hp + "self_attn.o_proj.bias", Shape: []int64{H}})
	}
	o := f.op("linear", p+"_o", oArgs)
	if sp.Family.SandwichNorms {
		o = f.rmsNorm(o, hp+"post_attention_layernorm.weight", false, p+"_attn_post_norm", "")
	}
	resName := ""
	if skipMLP {
		resName = out
	}
	if resName == "" {
		resName = f.name(p + "_attn_res")
	}
	x = f.b.Op("add", resName, mil.In{"x": x, "y": o})
	if skipMLP {
		return x
	}

	// Gated MLP (SwiGLU, or GeGLU for Gemma) as 1×1 convs.
	mlpNorm := hp + "post_attention_layernorm.weight"
	if sp.Family.SandwichNorms {
		mlpNorm = hp + "pre_feedforward_layernorm.weight"
	}
	h = f.rmsNorm(x, mlpNorm, true, p+"_mlp_norm", "")
	hc = f.toChannels(h, p+"_mlp_in")
	g := f.conv1x1(hc, hp+"mlp.gate_proj", I, H, bias.MLP, p+"_gate")
	u := f.conv1x1(hc, hp+"mlp.up_proj", I, H, bias.MLP, p+"_up")
	if sp.Activation == "gelu_pytorch_tanh" {
		g = f.op("gelu", p+"_gelu", mil.In{"x": g, "mode": "TANH_APPROXIMATION"})
	} else {
		g = f.op("silu", p+"_silu", mil.In{"x": g})
	}
	m := f.op("mul", p+"_glu", mil.In{"x": g, "y": u})
	dn := f.conv1x1(m, hp+"mlp.down_proj", H, I, bias.MLP, p+"_down")
	dn = f.op("squeeze", p+"_down_3d", mil.In{"x": dn, "axes": []int{2}})
	dn = f.op("transpose", p+"_down_t", mil.In{"x": dn, "perm": []int{0, 2, 1}})
	if sp.Family.SandwichNorms {
		dn = f.rmsNorm(dn, hp+"post_feedforward_layernorm.weight", false, p+"_mlp_post_norm", "")
	}
	if out == "" {
		out = f.name(p + "_mlp_res")
	}
	return f.b.Op("add", out, mil.In{"x": x, "y": dn})
}

// decoderFunction builds the decode (prefill=false, T=1) or prefill (T=B)
// function of chunk i and returns it with its interface.
func (c *Converter) decoderFunction(name string, chunk int, prefill bool, ws *weightSet) (*mil.Function, coreml.FunctionDescription, error) {
	cfg, o := c.cfg, c.opts
	H, C, d := int64(cfg.HiddenSize), int64(o.ContextLength), int64(cfg.HeadDim)
	T := 1
	if prefill {
		T = o.BatchSize
	}
	r := c.layout[chunk]
	last := chunk == len(c.layout)-1
	stateShape := []int64{int64(2 * cfg.NumHiddenLayers), int64(cfg.NumKeyValueHeads), int64(o.StateLength), d}

	b := mil.NewBuilder(name, mil.OpsetIOS18)
	f := &fn{c: c, b: b, ws: ws}
	x := b.Input("hidden_states", mil.TensorType(mil.Float16, 1, int64(T), H))
	posIDs := b.Input("position_ids", mil.TensorType(mil.Int32, int64(T)))
	mask := b.Input("causal_mask", mil.TensorType(mil.Float16, 1, 1, int64(T), C))
	pos := b.Input("current_pos", mil.TensorType(mil.Int32, 1))
	state := b.Input(StateName, mil.StateType(mil.TensorType(mil.Float16, stateShape...)))

	// RoPE rows for the tokens: decode uses current_pos (as ANEMLL),
	// prefill position_ids. Negative positions wrap like Python indexing,
	// as in ANEMLL's traced graph, so gather sees non-negative indices.
	rp := pos
	if prefill {
		rp = posIDs
	}
	nonneg := f.op("greater_equal", "rope_pos_nonneg", mil.In{"x": rp, "y": 0})
	wrapped := f.op("add", "rope_pos_wrapped", mil.In{"x": rp, "y": c.ropeRows})
	idx := f.op("select", "rope_pos", mil.In{"cond": nonneg, "a": rp, "b": wrapped})
	half := func(tbl []uint16, nm string) *mil.Var {
		t := ws.constValue(b, nm, func() *mil.Value { return mil.FP16([]int64{1, int64(c.ropeRows), d}, tbl) })
		g := f.op("gather", nm+"_rows", mil.In{"x": t, "indices": idx, "axis": 1, "batch_dims": 0, "validate_indices": false})
		g = f.op("reshape", nm+"_4d", mil.In{"x": g, "shape": []int{1, 1, T, int(d)}})
		return f.op("slice_by_index", nm+"_half", mil.In{"x": g, "begin": []int{0, 0, 0, 0}, "end": []int{1, 1, T, int(d / 2)}})
	}
	io := &decoderIO{T: T, state: state, mask: mask, pos: pos}
	// RoPE tables are gathered once per function, on first use, so a chunk
	// carries only the tables of its own layers. Table 0 keeps the names
	// of the single-table graph.
	type cs struct{ cos, sin *mil.Var }
	ropes := map[int]cs{}
	io.rope = func(i int) (*mil.Var, *mil.Var) {
		if r, ok := ropes[i]; ok {
			return r.cos, r.sin
		}
		nm := "rope"
		if i > 0 {
			nm = fmt.Sprintf("rope%d", i)
		}
		r := cs{half(c.ropes[i].cos, nm+"_cos_to_fp16"), half(c.ropes[i].sin, nm+"_sin_to_fp16")}
		ropes[i] = r
		return r.cos, r.sin
	}
	// A sliding window of w masks key j for the query at position p when
	// p − j ≥ w, on top of the causal mask: select(p ≥ j + w, −inf, mask).
	windows := map[int]*mil.Var{}
	io.window = func(w int) *mil.Var {
		if m, ok := windows[w]; ok {
			return m
		}
		if _, ok := windows[-1]; !ok {
			q := f.op("reshape", "window_query_pos", mil.In{"x": rp, "shape": []int{1, 1, T, 1}})
			windows[-1] = q
		}
		keys := make([]int32, C)
		for j := range keys {
			keys[j] = int32(j + w)
		}
		nm := fmt.Sprintf("window%d", w)
		kw := ws.constValue(b, nm+"_key_limit", func() *mil.Value { return mil.Int32s([]int64{1, 1, 1, C}, keys) })
		far := f.op("greater_equal", nm+"_far", mil.In{"x": windows[-1], "y": kw})
		m := f.op("select", nm+"_mask", mil.In{"cond": far, "a": mil.F16(math.Inf(-1)), "b": mask})
		windows[w] = m
		return m
	}

	// Gather the chunk's RoPE rows and build its window masks before the
	// layers, in layer order.
	for l := r.Start; l < r.End; l++ {
		io.rope(c.ropeOf[l])
		if w := c.spec.Layers[l].Window; c.windowed(w) {
			io.window(w)
		}
	}
	io.end = f.op("add", "current_pos_end", mil.In{"x": pos, "y": []int{T}})
	const outName = "output_hidden_states"
	for l := r.Start; l < r.End; l++ {
		lastLayer := l == r.End-1
		out := ""
		switch {
		case lastLayer && !last:
			out = outName
		case lastLayer && prefill:
			// ANEMLL's last prefill chunk skips the final MLP and norm.
			x = f.layer(l, x, io, true, "")
			x = b.Op("slice_by_index", outName, mil.In{"x": x, "begin": []int{0, 0, 0}, "end": []int{1, 1, int(H)}})
			continue
		}
		x = f.layer(l, x, io, false, out)
	}
	if last && !prefill {
		x = f.rmsNorm(x, "model.norm.weight", true, "final_norm", outName)
	}
	if !prefill {
		// Decode does not read position_ids (RoPE uses current_pos, as in
		// ANEMLL); keep the input referenced the way coremltools did in
		// the reference packages.
		f.op("identity", "position_ids_tmp", mil.In{"x": posIDs})
	}
	b.Output(x)
	fnc, err := b.Function()
	if err != nil {
		return nil, coreml.FunctionDescription{}, fmt.Errorf("decoder: build %s chunk %d: %w", name, chunk, err)
	}
	outT := int64(T)
	if prefill && last {
		outT = 1
	}
	desc := coreml.FunctionDescription{
		Name: name,
		Inputs: []coreml.Feature{
			coreml.ArrayFeature("hidden_states", mil.Float16, 1, int64(T), H),
			coreml.ArrayFeature("position_ids", mil.Int32, int64(T)),
			coreml.ArrayFeature("causal_mask", mil.Float16, 1, 1, int64(T), C),
			coreml.ArrayFeature("current_pos", mil.Int32, 1),
		},
		Outputs: []coreml.Feature{coreml.ArrayFeature(outName, mil.Float16, 1, outT, H)},
		States:  []coreml.Feature{coreml.StateOf(StateName, mil.Float16, stateShape...)},
	}
	return fnc, desc, nil
}

func (c *Converter) checkChunk(i int) error {
	if i < 0 || i >= len(c.layout) {
		return fmt.Errorf("decoder: chunk %d out of range [0, %d)", i, len(c.layout))
	}
	return nil
}

func (c *Converter) chunkMeta(i int) map[string]string {
	return map[string]string{
		"com.anemll.num_chunks": strconv.Itoa(len(c.layout)),
		"com.anemll.chunk_no":   strconv.Itoa(i + 1),
	}
}

func singleFunction(fnc *mil.Function, d coreml.FunctionDescription, md coreml.Metadata) *coreml.Package {
	p := mil.NewProgram()
	p.Functions = append(p.Functions, fnc)
	return &coreml.Package{
		SpecVersion: coreml.SpecVersionIOS18,
		Program:     p,
		Description: coreml.Description{Inputs: d.Inputs, Outputs: d.Outputs, States: d.States, Metadata: md},
	}
}

// FFNChunk builds part 2 for chunk i (from 0): decode one token through the
// chunk's layers, function "main". The last chunk applies the final norm.
func (c *Converter) FFNChunk(i int) (*coreml.Package, error) {
	if err := c.checkChunk(i); err != nil {
		return nil, err
	}
	ws := c.partWeightSet(arch.PartFFN)
	fnc, d, err := c.decoderFunction("main", i, false, ws)
	if err != nil {
		return nil, err
	}
	return singleFunction(fnc, d, c.metadata("Anemll Model (FFN) converted to CoreML", ws, c.chunkMeta(i))), nil
}

// PrefillChunk builds part 2_prefill for chunk i (from 0): BatchSize tokens
// through the chunk's layers, writing their K/V at current_pos onwards.
// The last chunk returns only the first token's row and skips the last
// layer's MLP and the final norm, as ANEMLL does.
func (c *Converter) PrefillChunk(i int) (*coreml.Package, error) {
	if err := c.checkChunk(i); err != nil {
		return nil, err
	}
	ws := c.partWeightSet(arch.PartFFN)
	fnc, d, err := c.decoderFunction("main", i, true, ws)
	if err != nil {
		return nil, err
	}
	meta := c.chunkMeta(i)
	meta["com.anemll.batch_size"] = strconv.Itoa(c.opts.BatchSize)
	return singleFunction(fnc, d, c.metadata("Anemll Model (Prefill) converted to CoreML", ws, meta)), nil
}

// CombinedChunk builds the multifunction FFN_PF package of chunk i: functions
// "infer" (FFNChunk) and "prefill" (PrefillChunk), default "infer". Both
// functions share the same weight values.
func (c *Converter) CombinedChunk(i int) (*coreml.Package, error) {
	if err := c.checkChunk(i); err != nil {
		return nil, err
	}
	ws := c.partWeightSet(arch.PartFFN)
	inf, di, err := c.decoderFunction("infer", i, false, ws)
	if err != nil {
		return nil, err
	}
	pre, dp, err := c.decoderFunction("prefill", i, true, ws)
	if err != nil {
		return nil, err
	}
	meta := c.chunkMeta(i)
	meta["com.anemll.batch_size"] = strconv.Itoa(c.opts.BatchSize)
	md := c.metadata("Anemll Model: Multifunction FFN+Prefill", ws, meta)
	p := mil.NewProgram()
	p.Functions = append(p.Functions, inf, pre)
	return &coreml.Package{
		SpecVersion: coreml.SpecVersionIOS18,
		Program:     p,
		Description: coreml.Description{Functions: []coreml.FunctionDescription{di, dp}, DefaultFunction: "infer", Metadata: md},
	}, nil
}

// Embeddings builds part 1: input_ids int32 [1,1] or [1,BatchSize]
// (enumerated) → hidden_states fp16 [1,N,H] by gathering rows of the
// embedding table. Negative ids wrap (id+V) as in ANEMLL's traced graph.
func (c *Converter) Embeddings() (*coreml.Package, error) {
	cfg, B := c.cfg, int64(c.opts.BatchSize)
	V, H := int64(cfg.VocabSize), int64(cfg.HiddenSize)
	ws := c.partWeightSet(arch.PartEmbeddings)
	b := mil.NewBuilder("main", mil.OpsetIOS18)
	f := &fn{c: c, b: b, ws: ws}
	n := mil.Unknown
	if B == 1 {
		n = 1
	}
	ids := b.Input("input_ids", mil.TensorType(mil.Int32, 1, n))
	nonneg := f.op("greater_equal", "input_ids_nonneg", mil.In{"x": ids, "y": 0})
	wrapped := f.op("add", "input_ids_wrapped", mil.In{"x": ids, "y": int(V)})
	idx := f.op("select", "input_ids_index", mil.In{"cond": nonneg, "a": ids, "b": wrapped})
	w := ws.matrix(b, "embed_tokens_weight_to_fp16", tensorRef{Name: "model.embed_tokens.weight", Shape: []int64{V, H}})
	var out *mil.Var
	sc := c.spec.EmbedScale
	if a := c.opts.ResidualScale; a != 0 && a != 1 {
		if sc == 0 {
			sc = 1
		}
		sc *= a
	}
	if sc != 0 {
		e := f.op("gather", "embeddings", mil.In{"x": w, "indices": idx, "axis": 0, "batch_dims": 0, "validate_indices": false})
		out = b.Op("mul", "hidden_states", mil.In{"x": e, "y": mil.F16(sc)})
	} else {
		out = b.Op("gather", "hidden_states", mil.In{"x": w, "indices": idx, "axis": 0, "batch_dims": 0, "validate_indices": false})
	}
	b.Output(out)
	fnc, err := b.Function()
	if err != nil {
		return nil, fmt.Errorf("decoder: build embeddings: %w", err)
	}
	in := coreml.ArrayFeature("input_ids", mil.Int32, 1, 1)
	in.Enumerated = [][]int64{{1, 1}, {1, B}}
	d := coreml.FunctionDescription{
		Inputs:  []coreml.Feature{in},
		Outputs: []coreml.Feature{{Name: "hidden_states", Kind: coreml.MultiArray, DType: mil.Float16}},
	}
	return singleFunction(fnc, d, c.metadata("Anemll Model (Embeddings) converted to CoreML", ws, nil)), nil
}

// LMHead builds part 3: hidden_states [1,1,H] → logits1..logitsK fp16
// [1,1,P] (a single output is named "logits", as in ANEMLL), K =
// SplitLMHead, P = ceil(V/K), each a 1×1 conv over rows [(i−1)·P, i·P) of
// the LM head (the embedding matrix when tied). When K does not divide V
// the last part is padded with zero weight rows and a bias of −Inf on
// them, so concatenating the outputs gives V real logits followed by
// K·P−V logits of −Inf that argmax and softmax ignore; every part has the
// same size P, which runners that index parts by a fixed size need.
// With Options.Argmax the outputs are argmax_idx and argmax_val instead
// (see argmaxOutputs).
func (c *Converter) LMHead() (*coreml.Package, error) {
	ws := c.partWeightSet(arch.PartLMHead)
	fnc, d, err := c.lmHeadFunction(ws, c.opts.Argmax)
	if err != nil {
		return nil, err
	}
	meta := map[string]string{
		"com.anemll-go.split_lm_head": strconv.Itoa(c.opts.SplitLMHead),
		"com.anemll-go.vocab_size":    strconv.Itoa(c.cfg.VocabSize),
	}
	if c.opts.Argmax {
		for k, v := range c.argmaxMeta() {
			meta[k] = v
		}
	}
	md := c.metadata("Anemll Model (LM Head) converted to CoreML", ws, meta)
	return singleFunction(fnc, d, md), nil
}

// lmHeadFunction builds the LM head function "main" with ws's weights,
// returning logits or (argmax) per-split winners.
func (c *Converter) lmHeadFunction(ws *weightSet, argmax bool) (*mil.Function, coreml.FunctionDescription, error) {
	cfg, K := c.cfg, c.opts.SplitLMHead
	V, H, P := int64(cfg.VocabSize), int64(cfg.HiddenSize), int64(c.lmPartRows())
	b := mil.NewBuilder("main", mil.OpsetIOS18)
	f := &fn{c: c, b: b, ws: ws}
	x := b.Input("hidden_states", mil.TensorType(mil.Float16, 1, 1, H))
	xc := f.toChannels(x, "lm_head_in")
	outs := make([]*mil.Var, K)
	d := coreml.FunctionDescription{Inputs: []coreml.Feature{coreml.ArrayFeature("hidden_states", mil.Float16, 1, 1, H)}}
	for i := 0; i < K; i++ {
		r0, r1 := int64(i)*P, min(int64(i+1)*P, V)
		ref := tensorRef{Name: c.lmHead, Row0: r0, Row1: r1, PadRows: P - (r1 - r0), Shape: []int64{P, H, 1, 1}}
		w := ws.matrix(b, fmt.Sprintf("lm_head%d_%d_weight_to_fp16", K, i+1), ref)
		args := mil.In{"x": xc, "weight": w, "strides": []int{1, 1}, "pad_type": "valid",
			"pad": []int{0, 0, 0, 0}, "dilations": []int{1, 1}, "groups": 1}
		if pad := P - (r1 - r0); pad > 0 {
			bias := make([]uint16, P)
			for j := r1 - r0; j < P; j++ {
				bias[j] = 0xfc00 // −Inf
			}
			args["bias"] = b.Const(fmt.Sprintf("lm_head%d_%d_pad_bias_to_fp16", K, i+1), mil.FP16([]int64{P}, bias))
		}
		y := f.op("conv", fmt.Sprintf("lm_head%d_%d", K, i+1), args)
		y = f.op("squeeze", fmt.Sprintf("lm_head%d_%d_3d", K, i+1), mil.In{"x": y, "axes": []int{2}})
		if cp := c.spec.FinalSoftcap; cp > 0 {
			y = f.softcap(y, cp, fmt.Sprintf("lm_head%d_%d_softcap", K, i+1))
		}
		name := "logits" + strconv.Itoa(i+1)
		if K == 1 {
			name = "logits"
		}
		if argmax {
			name = f.name(fmt.Sprintf("lm_head%d_%d_logits", K, i+1))
		}
		outs[i] = b.Op("transpose", name, mil.In{"x": y, "perm": []int{0, 2, 1}})
		d.Outputs = append(d.Outputs, coreml.ArrayFeature(name, mil.Float16, 1, 1, P))
	}
	if argmax {
		outs, d.Outputs = f.argmaxOutputs(outs)
	}
	b.Output(outs...)
	fnc, err := b.Function()
	if err != nil {
		return nil, d, fmt.Errorf("decoder: build LM head: %w", err)
	}
	return fnc, d, nil
}
