package mil

import (
	"fmt"
	"sort"
)

// opSpec describes an op type the builder knows: its parameters in
// definition order, which are required, and how to infer output types.
type opSpec struct {
	params   []string
	required []string
	infer    func(*inferCtx) ([]Type, error)
}

func (s opSpec) order(p string) int {
	for i, q := range s.params {
		if q == p {
			return i
		}
	}
	return len(s.params)
}

// inferCtx gives an infer function the types of each parameter's bindings
// and the constant values of const-bound parameters.
type inferCtx struct {
	op     string
	types  map[string][]Type
	consts map[string]*Value
}

func (c *inferCtx) has(p string) bool { return len(c.types[p]) > 0 }

func (c *inferCtx) tensor(p string) (Type, error) {
	ts := c.types[p]
	if len(ts) != 1 {
		return Type{}, fmt.Errorf("parameter %q needs one binding", p)
	}
	if ts[0].Kind != KindTensor {
		return Type{}, fmt.Errorf("parameter %q must be a tensor, is %s", p, ts[0])
	}
	return ts[0], nil
}

func (c *inferCtx) ints(p string) ([]int64, error) {
	v := c.consts[p]
	if v == nil {
		return nil, fmt.Errorf("parameter %q must be a constant", p)
	}
	return v.Ints()
}

func (c *inferCtx) intOr(p string, def int64) (int64, error) {
	if !c.has(p) {
		return def, nil
	}
	v, err := c.ints(p)
	if err != nil {
		return 0, err
	}
	if len(v) != 1 {
		return 0, fmt.Errorf("parameter %q must be a scalar", p)
	}
	return v[0], nil
}

func (c *inferCtx) boolOr(p string, def bool) (bool, error) {
	v, err := c.intOr(p, map[bool]int64{true: 1}[def])
	return v != 0, err
}

func (c *inferCtx) str(p string) (string, error) {
	v := c.consts[p]
	if v == nil {
		return "", fmt.Errorf("parameter %q must be a constant string", p)
	}
	s, ok := v.Str()
	if !ok {
		return "", fmt.Errorf("parameter %q must be a string scalar", p)
	}
	return s, nil
}

func one(t Type) []Type { return []Type{t} }

// NormAxis returns axis as an index into a shape of the given rank,
// counting a negative axis from the end.
func NormAxis(axis int64, rank int) (int, error) {
	a := axis
	if a < 0 {
		a += int64(rank)
	}
	if a < 0 || a >= int64(rank) {
		return 0, fmt.Errorf("axis %d out of range for rank %d", axis, rank)
	}
	return int(a), nil
}

// Broadcast returns the numpy-style broadcast of two shapes.
func Broadcast(a, b []int64) ([]int64, error) {
	n := max(len(a), len(b))
	out := make([]int64, n)
	for i := 0; i < n; i++ {
		x, y := int64(1), int64(1)
		if j := len(a) - n + i; j >= 0 {
			x = a[j]
		}
		if j := len(b) - n + i; j >= 0 {
			y = b[j]
		}
		switch {
		case x == y:
			out[i] = x
		case x == 1:
			out[i] = y
		case y == 1:
			out[i] = x
		case x == Unknown:
			out[i] = y
		case y == Unknown:
			out[i] = x
		default:
			return nil, fmt.Errorf("shapes %s and %s do not broadcast", ShapeString(a), ShapeString(b))
		}
	}
	return out, nil
}

func elementwise(outBool bool) func(*inferCtx) ([]Type, error) {
	return func(c *inferCtx) ([]Type, error) {
		x, err := c.tensor("x")
		if err != nil {
			return nil, err
		}
		y, err := c.tensor("y")
		if err != nil {
			return nil, err
		}
		if x.DType != y.DType {
			return nil, fmt.Errorf("x is %s but y is %s", x.DType, y.DType)
		}
		s, err := Broadcast(x.Shape, y.Shape)
		if err != nil {
			return nil, err
		}
		dt := x.DType
		if outBool {
			dt = Bool
		}
		return one(TensorType(dt, s...)), nil
	}
}

func unary(c *inferCtx) ([]Type, error) {
	x, err := c.tensor("x")
	if err != nil {
		return nil, err
	}
	return one(x.Clone()), nil
}

func reduce(c *inferCtx) ([]Type, error) {
	x, err := c.tensor("x")
	if err != nil {
		return nil, err
	}
	keep, err := c.boolOr("keep_dims", false)
	if err != nil {
		return nil, err
	}
	axes := make([]int64, 0)
	if c.has("axes") {
		if axes, err = c.ints("axes"); err != nil {
			return nil, err
		}
	} else {
		for i := range x.Shape {
			axes = append(axes, int64(i))
		}
	}
	red := map[int]bool{}
	for _, a := range axes {
		i, err := NormAxis(a, x.Rank())
		if err != nil {
			return nil, err
		}
		red[i] = true
	}
	var s []int64
	for i, d := range x.Shape {
		switch {
		case !red[i]:
			s = append(s, d)
		case keep:
			s = append(s, 1)
		}
	}
	return one(TensorType(x.DType, s...)), nil
}

var opSpecs = map[string]opSpec{}

func init() {
	for _, name := range []string{"add", "sub", "mul", "real_div", "maximum", "minimum", "pow", "floor_div", "mod"} {
		opSpecs[name] = opSpec{params: []string{"x", "y"}, required: []string{"x", "y"}, infer: elementwise(false)}
	}
	for _, name := range []string{"equal", "not_equal", "greater", "greater_equal", "less", "less_equal", "logical_and", "logical_or"} {
		opSpecs[name] = opSpec{params: []string{"x", "y"}, required: []string{"x", "y"}, infer: elementwise(true)}
	}
	for _, name := range []string{"exp", "sqrt", "silu", "sigmoid", "tanh", "relu", "abs", "neg", "log", "square", "identity", "floor", "ceil", "round", "sign", "sin", "cos", "logical_not", "erf", "gelu"} {
		params := []string{"x"}
		if name == "gelu" {
			params = append(params, "mode")
		}
		opSpecs[name] = opSpec{params: params, required: []string{"x"}, infer: unary}
	}
	opSpecs["rsqrt"] = opSpec{params: []string{"x", "epsilon"}, required: []string{"x"}, infer: unary}
	opSpecs["softmax"] = opSpec{params: []string{"x", "axis"}, required: []string{"x"}, infer: unary}
	opSpecs["layer_norm"] = opSpec{params: []string{"x", "axes", "gamma", "beta", "epsilon"}, required: []string{"x"}, infer: unary}
	for _, name := range []string{"reduce_max", "reduce_sum", "reduce_mean", "reduce_min", "reduce_prod", "reduce_l2_norm", "reduce_sum_square"} {
		opSpecs[name] = opSpec{params: []string{"x", "axes", "keep_dims"}, required: []string{"x"}, infer: reduce}
	}
	opSpecs["reduce_argmax"] = opSpec{params: []string{"x", "axis", "keep_dims", "output_dtype"}, required: []string{"x"}, infer: inferArgmax}
	opSpecs["conv"] = opSpec{params: []string{"x", "weight", "bias", "strides", "pad_type", "pad", "dilations", "groups"}, required: []string{"x", "weight"}, infer: inferConv}
	opSpecs["linear"] = opSpec{params: []string{"x", "weight", "bias"}, required: []string{"x", "weight"}, infer: inferLinear}
	opSpecs["matmul"] = opSpec{params: []string{"x", "y", "transpose_x", "transpose_y"}, required: []string{"x", "y"}, infer: inferMatmul}
	opSpecs["concat"] = opSpec{params: []string{"values", "axis", "interleave"}, required: []string{"values", "axis"}, infer: inferConcat}
	opSpecs["split"] = opSpec{params: []string{"x", "num_splits", "split_sizes", "axis"}, required: []string{"x", "axis"}, infer: inferSplit}
	opSpecs["slice_by_index"] = opSpec{params: []string{"x", "begin", "end", "stride", "begin_mask", "end_mask", "squeeze_mask"}, required: []string{"x", "begin", "end"}, infer: inferSliceByIndex}
	opSpecs["slice_by_size"] = opSpec{params: []string{"x", "begin", "size"}, required: []string{"x", "begin", "size"}, infer: inferSliceBySize}
	opSpecs["slice_update"] = opSpec{params: []string{"x", "update", "begin", "end", "stride", "begin_mask", "end_mask", "squeeze_mask"}, required: []string{"x", "update", "begin", "end"}, infer: inferSliceUpdate}
	opSpecs["gather"] = opSpec{params: []string{"x", "indices", "axis", "batch_dims", "validate_indices"}, required: []string{"x", "indices"}, infer: inferGather}
	opSpecs["gather_along_axis"] = opSpec{params: []string{"x", "indices", "axis", "validate_indices"}, required: []string{"x", "indices"}, infer: inferGatherAlongAxis}
	opSpecs["reshape"] = opSpec{params: []string{"x", "shape"}, required: []string{"x", "shape"}, infer: inferReshape}
	opSpecs["transpose"] = opSpec{params: []string{"x", "perm"}, required: []string{"x", "perm"}, infer: inferTranspose}
	opSpecs["expand_dims"] = opSpec{params: []string{"x", "axes"}, required: []string{"x", "axes"}, infer: inferExpandDims}
	opSpecs["squeeze"] = opSpec{params: []string{"x", "axes"}, required: []string{"x"}, infer: inferSqueeze}
	opSpecs["tile"] = opSpec{params: []string{"x", "reps"}, required: []string{"x", "reps"}, infer: inferTile}
	opSpecs["cast"] = opSpec{params: []string{"x", "dtype"}, required: []string{"x", "dtype"}, infer: inferCast}
	opSpecs["select"] = opSpec{params: []string{"cond", "a", "b"}, required: []string{"cond", "a", "b"}, infer: inferSelect}
	opSpecs["read_state"] = opSpec{params: []string{"input"}, required: []string{"input"}, infer: inferReadState}
	opSpecs["write_state"] = opSpec{params: []string{"input", "data"}, required: []string{"input", "data"}, infer: inferWriteState}
	opSpecs["constexpr_lut_to_dense"] = opSpec{params: []string{"indices", "lut", "vector_axis"}, required: []string{"indices", "lut"}, infer: inferLUT}
	opSpecs["scaled_dot_product_attention"] = opSpec{params: []string{"query", "key", "value", "attn_mask"}, required: []string{"query", "key", "value"}, infer: inferSDPA}
	opSpecs["band_part"] = opSpec{params: []string{"x", "lower", "upper"}, required: []string{"x"}, infer: unary}
}

// KnownOp reports whether the builder can infer the output types of opType.
func KnownOp(opType string) bool { _, ok := opSpecs[opType]; return ok }

func inferArgmax(c *inferCtx) ([]Type, error) {
	x, err := c.tensor("x")
	if err != nil {
		return nil, err
	}
	axis, err := c.intOr("axis", -1)
	if err != nil {
		return nil, err
	}
	keep, err := c.boolOr("keep_dims", false)
	if err != nil {
		return nil, err
	}
	a, err := NormAxis(axis, x.Rank())
	if err != nil {
		return nil, err
	}
	dt := Int32
	if c.has("output_dtype") {
		s, err := c.str("output_dtype")
		if err != nil {
			return nil, err
		}
		if dt, _ = ParseDType(s); dt != Int32 && dt != UInt16 {
			return nil, fmt.Errorf("output_dtype %q not supported", s)
		}
	}
	var s []int64
	for i, d := range x.Shape {
		if i != a {
			s = append(s, d)
		} else if keep {
			s = append(s, 1)
		}
	}
	return one(TensorType(dt, s...)), nil
}

func inferConv(c *inferCtx) ([]Type, error) {
	x, err := c.tensor("x")
	if err != nil {
		return nil, err
	}
	w, err := c.tensor("weight")
	if err != nil {
		return nil, err
	}
	sp := x.Rank() - 2
	if sp < 1 || w.Rank() != x.Rank() {
		return nil, fmt.Errorf("conv x %s and weight %s ranks do not fit", x, w)
	}
	groups, err := c.intOr("groups", 1)
	if err != nil {
		return nil, err
	}
	if x.Shape[1] >= 0 && x.Shape[1] != w.Shape[1]*groups {
		return nil, fmt.Errorf("conv input channels %d != weight %d × groups %d", x.Shape[1], w.Shape[1], groups)
	}
	get := func(p string, def int64, n int) ([]int64, error) {
		if !c.has(p) {
			v := make([]int64, n)
			for i := range v {
				v[i] = def
			}
			return v, nil
		}
		v, err := c.ints(p)
		if err == nil && len(v) != n {
			err = fmt.Errorf("parameter %q has %d values, want %d", p, len(v), n)
		}
		return v, err
	}
	strides, err := get("strides", 1, sp)
	if err != nil {
		return nil, err
	}
	dil, err := get("dilations", 1, sp)
	if err != nil {
		return nil, err
	}
	pad, err := get("pad", 0, 2*sp)
	if err != nil {
		return nil, err
	}
	padType := "valid"
	if c.has("pad_type") {
		if padType, err = c.str("pad_type"); err != nil {
			return nil, err
		}
	}
	out := []int64{x.Shape[0], w.Shape[0]}
	for i := 0; i < sp; i++ {
		d, k := x.Shape[2+i], w.Shape[2+i]
		if d < 0 {
			out = append(out, Unknown)
			continue
		}
		switch padType {
		case "valid":
			out = append(out, (d-(k-1)*dil[i]-1)/strides[i]+1)
		case "custom":
			out = append(out, (d+pad[2*i]+pad[2*i+1]-(k-1)*dil[i]-1)/strides[i]+1)
		case "same", "same_lower":
			out = append(out, (d+strides[i]-1)/strides[i])
		default:
			return nil, fmt.Errorf("pad_type %q unknown", padType)
		}
	}
	return one(TensorType(x.DType, out...)), nil
}

func inferLinear(c *inferCtx) ([]Type, error) {
	x, err := c.tensor("x")
	if err != nil {
		return nil, err
	}
	w, err := c.tensor("weight")
	if err != nil {
		return nil, err
	}
	if w.Rank() != 2 || x.Rank() < 1 {
		return nil, fmt.Errorf("linear weight must be rank 2, is %s", w)
	}
	if last := x.Shape[x.Rank()-1]; last >= 0 && last != w.Shape[1] {
		return nil, fmt.Errorf("linear x %s does not fit weight %s", x, w)
	}
	s := append(append([]int64{}, x.Shape[:x.Rank()-1]...), w.Shape[0])
	return one(TensorType(x.DType, s...)), nil
}

func inferMatmul(c *inferCtx) ([]Type, error) {
	x, err := c.tensor("x")
	if err != nil {
		return nil, err
	}
	y, err := c.tensor("y")
	if err != nil {
		return nil, err
	}
	tx, err := c.boolOr("transpose_x", false)
	if err != nil {
		return nil, err
	}
	ty, err := c.boolOr("transpose_y", false)
	if err != nil {
		return nil, err
	}
	if x.Rank() < 2 || y.Rank() < 2 {
		return nil, fmt.Errorf("matmul needs rank ≥ 2 (rank-1 operands not supported here)")
	}
	xs, ys := append([]int64{}, x.Shape...), append([]int64{}, y.Shape...)
	if tx {
		xs[len(xs)-1], xs[len(xs)-2] = xs[len(xs)-2], xs[len(xs)-1]
	}
	if ty {
		ys[len(ys)-1], ys[len(ys)-2] = ys[len(ys)-2], ys[len(ys)-1]
	}
	k1, k2 := xs[len(xs)-1], ys[len(ys)-2]
	if k1 >= 0 && k2 >= 0 && k1 != k2 {
		return nil, fmt.Errorf("matmul inner dimensions %d and %d differ", k1, k2)
	}
	batch, err := Broadcast(xs[:len(xs)-2], ys[:len(ys)-2])
	if err != nil {
		return nil, err
	}
	s := append(batch, xs[len(xs)-2], ys[len(ys)-1])
	return one(TensorType(x.DType, s...)), nil
}

func inferConcat(c *inferCtx) ([]Type, error) {
	vals := c.types["values"]
	if len(vals) == 0 {
		return nil, fmt.Errorf("concat needs values")
	}
	axis, err := c.intOr("axis", 0)
	if err != nil {
		return nil, err
	}
	first := vals[0]
	a, err := NormAxis(axis, first.Rank())
	if err != nil {
		return nil, err
	}
	out := append([]int64{}, first.Shape...)
	for _, v := range vals[1:] {
		if v.DType != first.DType || v.Rank() != first.Rank() {
			return nil, fmt.Errorf("concat values %s and %s differ in dtype or rank", first, v)
		}
		for i := range out {
			if i == a {
				if out[i] < 0 || v.Shape[i] < 0 {
					out[i] = Unknown
				} else {
					out[i] += v.Shape[i]
				}
			} else if out[i] >= 0 && v.Shape[i] >= 0 && out[i] != v.Shape[i] {
				return nil, fmt.Errorf("concat values %s and %s differ off the axis", first, v)
			}
		}
	}
	return one(TensorType(first.DType, out...)), nil
}

func inferSplit(c *inferCtx) ([]Type, error) {
	x, err := c.tensor("x")
	if err != nil {
		return nil, err
	}
	axis, err := c.intOr("axis", 0)
	if err != nil {
		return nil, err
	}
	a, err := NormAxis(axis, x.Rank())
	if err != nil {
		return nil, err
	}
	var sizes []int64
	switch {
	case c.has("split_sizes"):
		if sizes, err = c.ints("split_sizes"); err != nil {
			return nil, err
		}
	case c.has("num_splits"):
		n, err := c.intOr("num_splits", 1)
		if err != nil {
			return nil, err
		}
		if n <= 0 || x.Shape[a] < 0 || x.Shape[a]%n != 0 {
			return nil, fmt.Errorf("cannot split %s into %d along axis %d", x, n, a)
		}
		for i := int64(0); i < n; i++ {
			sizes = append(sizes, x.Shape[a]/n)
		}
	default:
		return nil, fmt.Errorf("split needs num_splits or split_sizes")
	}
	outs := make([]Type, len(sizes))
	for i, s := range sizes {
		t := x.Clone()
		t.Shape[a] = s
		outs[i] = t
	}
	return outs, nil
}

// SliceShape returns the shape slice_by_index produces (Python slicing
// semantics, negative indices from the end).
func SliceShape(shape, begin, end, stride []int64, beginMask, endMask, squeezeMask []bool) ([]int64, error) {
	r := len(shape)
	if len(begin) != r || len(end) != r {
		return nil, fmt.Errorf("begin/end need %d values", r)
	}
	var out []int64
	for i := 0; i < r; i++ {
		d := shape[i]
		st := int64(1)
		if stride != nil {
			st = stride[i]
		}
		if st == 0 {
			return nil, fmt.Errorf("stride 0 on axis %d", i)
		}
		if squeezeMask != nil && squeezeMask[i] {
			continue
		}
		if d < 0 {
			out = append(out, Unknown)
			continue
		}
		b, e := begin[i], end[i]
		if beginMask != nil && beginMask[i] {
			if st > 0 {
				b = 0
			} else {
				b = d - 1
			}
		}
		if endMask != nil && endMask[i] {
			if st > 0 {
				e = d
			} else {
				e = -d - 1
			}
		}
		b, e = clampIndex(b, d, st), clampIndex(e, d, st)
		var n int64
		if st > 0 {
			n = (e - b + st - 1) / st
		} else {
			n = (b - e - st - 1) / (-st)
		}
		out = append(out, max(n, 0))
	}
	return out, nil
}

func clampIndex(x, d, st int64) int64 {
	if x < 0 {
		x += d
	}
	lo, hi := int64(0), d
	if st < 0 {
		lo, hi = -1, d-1
	}
	return min(max(x, lo), hi)
}

func (c *inferCtx) masks(p string, r int) ([]bool, error) {
	if !c.has(p) {
		return nil, nil
	}
	v, err := c.ints(p)
	if err != nil {
		return nil, err
	}
	if len(v) != r {
		return nil, fmt.Errorf("%s needs %d values", p, r)
	}
	m := make([]bool, r)
	for i, x := range v {
		m[i] = x != 0
	}
	return m, nil
}

func sliceCtx(c *inferCtx) (Type, []int64, error) {
	x, err := c.tensor("x")
	if err != nil {
		return Type{}, nil, err
	}
	r := x.Rank()
	bm, err := c.masks("begin_mask", r)
	if err != nil {
		return Type{}, nil, err
	}
	em, err := c.masks("end_mask", r)
	if err != nil {
		return Type{}, nil, err
	}
	sm, err := c.masks("squeeze_mask", r)
	if err != nil {
		return Type{}, nil, err
	}
	var stride []int64
	if c.has("stride") {
		if stride, err = c.ints("stride"); err != nil {
			return Type{}, nil, err
		}
		if len(stride) != r {
			return Type{}, nil, fmt.Errorf("stride needs %d values", r)
		}
	}
	bt, err := c.tensor("begin")
	if err != nil {
		return Type{}, nil, err
	}
	if bt.Rank() != 1 || bt.Shape[0] != int64(r) {
		return Type{}, nil, fmt.Errorf("begin must be [%d], is %s", r, bt)
	}
	begin, errB := c.ints("begin")
	end, errE := c.ints("end")
	if errB != nil || errE != nil {
		// Runtime begin/end: only masked axes and squeezed axes are known.
		out := []int64{}
		for i := 0; i < r; i++ {
			if sm != nil && sm[i] {
				continue
			}
			if bm != nil && em != nil && bm[i] && em[i] && (stride == nil || stride[i] == 1) {
				out = append(out, x.Shape[i])
			} else {
				out = append(out, Unknown)
			}
		}
		return x, out, nil
	}
	s, err := SliceShape(x.Shape, begin, end, stride, bm, em, sm)
	return x, s, err
}

func inferSliceByIndex(c *inferCtx) ([]Type, error) {
	x, s, err := sliceCtx(c)
	if err != nil {
		return nil, err
	}
	return one(TensorType(x.DType, s...)), nil
}

func inferSliceBySize(c *inferCtx) ([]Type, error) {
	x, err := c.tensor("x")
	if err != nil {
		return nil, err
	}
	size, err := c.ints("size")
	if err != nil {
		return nil, err
	}
	if len(size) != x.Rank() {
		return nil, fmt.Errorf("size needs %d values", x.Rank())
	}
	begin, berr := c.ints("begin")
	out := make([]int64, len(size))
	for i, s := range size {
		switch {
		case s >= 0:
			out[i] = s
		case berr == nil && x.Shape[i] >= 0:
			out[i] = x.Shape[i] - begin[i]
		default:
			out[i] = Unknown
		}
	}
	return one(TensorType(x.DType, out...)), nil
}

func inferSliceUpdate(c *inferCtx) ([]Type, error) {
	x, err := c.tensor("x")
	if err != nil {
		return nil, err
	}
	u, err := c.tensor("update")
	if err != nil {
		return nil, err
	}
	if u.DType != x.DType {
		return nil, fmt.Errorf("update is %s, x is %s", u.DType, x.DType)
	}
	_, s, err := sliceCtx(c)
	if err != nil {
		return nil, err
	}
	if len(s) != u.Rank() {
		return nil, fmt.Errorf("update %s does not fit the slice %s", u, ShapeString(s))
	}
	for i := range s {
		if s[i] >= 0 && u.Shape[i] >= 0 && s[i] != u.Shape[i] {
			return nil, fmt.Errorf("update %s does not fit the slice %s", u, ShapeString(s))
		}
	}
	return one(x.Clone()), nil
}

func inferGather(c *inferCtx) ([]Type, error) {
	x, err := c.tensor("x")
	if err != nil {
		return nil, err
	}
	idx, err := c.tensor("indices")
	if err != nil {
		return nil, err
	}
	if !idx.DType.IsInt() {
		return nil, fmt.Errorf("indices must be integers, are %s", idx.DType)
	}
	axis, err := c.intOr("axis", 0)
	if err != nil {
		return nil, err
	}
	bd, err := c.intOr("batch_dims", 0)
	if err != nil {
		return nil, err
	}
	a, err := NormAxis(axis, x.Rank())
	if err != nil {
		return nil, err
	}
	s := append([]int64{}, x.Shape[:a]...)
	s = append(s, idx.Shape[bd:]...)
	s = append(s, x.Shape[a+1:]...)
	return one(TensorType(x.DType, s...)), nil
}

func inferGatherAlongAxis(c *inferCtx) ([]Type, error) {
	x, err := c.tensor("x")
	if err != nil {
		return nil, err
	}
	idx, err := c.tensor("indices")
	if err != nil {
		return nil, err
	}
	if idx.Rank() != x.Rank() {
		return nil, fmt.Errorf("indices rank %d != x rank %d", idx.Rank(), x.Rank())
	}
	return one(TensorType(x.DType, idx.Shape...)), nil
}

// ReshapeShape resolves a reshape target (−1 infers one dimension, 0 copies
// the input dimension) against an input shape.
func ReshapeShape(in, target []int64) ([]int64, error) {
	out := append([]int64{}, target...)
	known := int64(1)
	inferAt := -1
	inN := int64(1)
	inKnown := true
	for _, d := range in {
		if d < 0 {
			inKnown = false
		}
		inN *= d
	}
	for i, d := range out {
		switch {
		case d == 0:
			j := len(in) - len(out) + i
			if i < len(in) {
				j = i
			}
			if j < 0 || j >= len(in) {
				return nil, fmt.Errorf("reshape 0 at axis %d has no input dimension", i)
			}
			out[i] = in[j]
			if out[i] < 0 {
				inferAt = -2
			} else {
				known *= out[i]
			}
		case d == -1:
			if inferAt == -1 {
				inferAt = i
			} else {
				return nil, fmt.Errorf("reshape shape %v has two -1", target)
			}
		case d < -1:
			return nil, fmt.Errorf("reshape shape %v has a negative size", target)
		default:
			known *= d
		}
	}
	if inferAt >= 0 {
		if !inKnown || known == 0 {
			out[inferAt] = Unknown
		} else {
			if inN%known != 0 {
				return nil, fmt.Errorf("cannot reshape %s to %v", ShapeString(in), target)
			}
			out[inferAt] = inN / known
		}
	} else if inferAt == -1 && inKnown && known != inN {
		return nil, fmt.Errorf("cannot reshape %s (%d elements) to %v", ShapeString(in), inN, target)
	}
	return out, nil
}

func inferReshape(c *inferCtx) ([]Type, error) {
	x, err := c.tensor("x")
	if err != nil {
		return nil, err
	}
	st, err := c.tensor("shape")
	if err != nil {
		return nil, err
	}
	target, err := c.ints("shape")
	if err != nil {
		// Runtime shape: rank known from the shape tensor.
		if st.Rank() != 1 || st.Shape[0] < 0 {
			return nil, fmt.Errorf("reshape shape must be a rank-1 tensor of known length")
		}
		s := make([]int64, st.Shape[0])
		for i := range s {
			s[i] = Unknown
		}
		return one(TensorType(x.DType, s...)), nil
	}
	s, err := ReshapeShape(x.Shape, target)
	if err != nil {
		return nil, err
	}
	return one(TensorType(x.DType, s...)), nil
}

func inferTranspose(c *inferCtx) ([]Type, error) {
	x, err := c.tensor("x")
	if err != nil {
		return nil, err
	}
	perm, err := c.ints("perm")
	if err != nil {
		return nil, err
	}
	if len(perm) != x.Rank() {
		return nil, fmt.Errorf("perm %v does not fit rank %d", perm, x.Rank())
	}
	seen := make([]bool, len(perm))
	s := make([]int64, len(perm))
	for i, p := range perm {
		a, err := NormAxis(p, x.Rank())
		if err != nil || seen[a] {
			return nil, fmt.Errorf("perm %v is not a permutation", perm)
		}
		seen[a] = true
		s[i] = x.Shape[a]
	}
	return one(TensorType(x.DType, s...)), nil
}

func inferExpandDims(c *inferCtx) ([]Type, error) {
	x, err := c.tensor("x")
	if err != nil {
		return nil, err
	}
	axes, err := c.ints("axes")
	if err != nil {
		return nil, err
	}
	r := x.Rank() + len(axes)
	ins := map[int]bool{}
	for _, a := range axes {
		i, err := NormAxis(a, r)
		if err != nil {
			return nil, err
		}
		if ins[i] {
			return nil, fmt.Errorf("axes %v repeat an axis", axes)
		}
		ins[i] = true
	}
	s := make([]int64, 0, r)
	j := 0
	for i := 0; i < r; i++ {
		if ins[i] {
			s = append(s, 1)
		} else {
			s = append(s, x.Shape[j])
			j++
		}
	}
	return one(TensorType(x.DType, s...)), nil
}

func inferSqueeze(c *inferCtx) ([]Type, error) {
	x, err := c.tensor("x")
	if err != nil {
		return nil, err
	}
	drop := map[int]bool{}
	if c.has("axes") {
		axes, err := c.ints("axes")
		if err != nil {
			return nil, err
		}
		for _, a := range axes {
			i, err := NormAxis(a, x.Rank())
			if err != nil {
				return nil, err
			}
			if x.Shape[i] != 1 && x.Shape[i] != Unknown {
				return nil, fmt.Errorf("cannot squeeze axis %d of %s", a, x)
			}
			drop[i] = true
		}
	} else {
		for i, d := range x.Shape {
			if d == 1 {
				drop[i] = true
			}
		}
	}
	var s []int64
	for i, d := range x.Shape {
		if !drop[i] {
			s = append(s, d)
		}
	}
	return one(TensorType(x.DType, s...)), nil
}

func inferTile(c *inferCtx) ([]Type, error) {
	x, err := c.tensor("x")
	if err != nil {
		return nil, err
	}
	reps, err := c.ints("reps")
	if err != nil {
		return nil, err
	}
	if len(reps) != x.Rank() {
		return nil, fmt.Errorf("reps %v does not fit rank %d", reps, x.Rank())
	}
	s := make([]int64, len(reps))
	for i, r := range reps {
		if x.Shape[i] < 0 {
			s[i] = Unknown
		} else {
			s[i] = x.Shape[i] * r
		}
	}
	return one(TensorType(x.DType, s...)), nil
}

func inferCast(c *inferCtx) ([]Type, error) {
	x, err := c.tensor("x")
	if err != nil {
		return nil, err
	}
	s, err := c.str("dtype")
	if err != nil {
		return nil, err
	}
	dt, ok := ParseDType(s)
	if !ok {
		return nil, fmt.Errorf("cast to unknown dtype %q", s)
	}
	return one(TensorType(dt, x.Shape...)), nil
}

func inferSelect(c *inferCtx) ([]Type, error) {
	cond, err := c.tensor("cond")
	if err != nil {
		return nil, err
	}
	a, err := c.tensor("a")
	if err != nil {
		return nil, err
	}
	b, err := c.tensor("b")
	if err != nil {
		return nil, err
	}
	if a.DType != b.DType {
		return nil, fmt.Errorf("a is %s but b is %s", a.DType, b.DType)
	}
	s, err := Broadcast(a.Shape, b.Shape)
	if err != nil {
		return nil, err
	}
	if s, err = Broadcast(s, cond.Shape); err != nil {
		return nil, err
	}
	return one(TensorType(a.DType, s...)), nil
}

func inferReadState(c *inferCtx) ([]Type, error) {
	ts := c.types["input"]
	if len(ts) != 1 || ts[0].Kind != KindState || ts[0].Elem == nil {
		return nil, fmt.Errorf("read_state input must be a state")
	}
	return one(ts[0].Elem.Clone()), nil
}

func inferWriteState(c *inferCtx) ([]Type, error) {
	ts := c.types["input"]
	if len(ts) != 1 || ts[0].Kind != KindState || ts[0].Elem == nil {
		return nil, fmt.Errorf("write_state input must be a state")
	}
	d, err := c.tensor("data")
	if err != nil {
		return nil, err
	}
	if !d.Equal(*ts[0].Elem) {
		return nil, fmt.Errorf("write_state data %s does not match state %s", d, ts[0])
	}
	return nil, nil
}

func inferLUT(c *inferCtx) ([]Type, error) {
	idx, err := c.tensor("indices")
	if err != nil {
		return nil, err
	}
	lut, err := c.tensor("lut")
	if err != nil {
		return nil, err
	}
	k := idx.Rank()
	if lut.Rank() != k+2 {
		return nil, fmt.Errorf("lut rank %d must be indices rank %d + 2", lut.Rank(), k)
	}
	nbits := idx.DType.Bits()
	if !idx.DType.IsInt() || idx.DType == Int4 || idx.DType == Int8 || nbits > 8 {
		return nil, fmt.Errorf("indices must be uint1..uint8, are %s", idx.DType)
	}
	if lut.Shape[k] != int64(1)<<nbits {
		return nil, fmt.Errorf("lut has %d entries per table, %s indices need %d", lut.Shape[k], idx.DType, 1<<nbits)
	}
	for i := 0; i < k; i++ {
		if lut.Shape[i] <= 0 || idx.Shape[i]%lut.Shape[i] != 0 {
			return nil, fmt.Errorf("indices dim %d (%d) is not divisible by lut dim %d", i, idx.Shape[i], lut.Shape[i])
		}
	}
	out := append([]int64{}, idx.Shape...)
	if vs := lut.Shape[k+1]; vs > 1 {
		axis, err := c.intOr("vector_axis", -1)
		if err != nil {
			return nil, err
		}
		if !c.has("vector_axis") {
			return nil, fmt.Errorf("vector_axis is required when the vector size is %d", vs)
		}
		a, err := NormAxis(axis, k)
		if err != nil {
			return nil, err
		}
		out[a] *= vs
	}
	return one(TensorType(lut.DType, out...)), nil
}

func inferSDPA(c *inferCtx) ([]Type, error) {
	q, err := c.tensor("query")
	if err != nil {
		return nil, err
	}
	v, err := c.tensor("value")
	if err != nil {
		return nil, err
	}
	s := append([]int64{}, q.Shape[:q.Rank()-1]...)
	s = append(s, v.Shape[v.Rank()-1])
	return one(TensorType(q.DType, s...)), nil
}

// SortInputs orders an op's inputs by the parameter order of its definition
// (unknown parameters last, by name), so listings read like Apple's.
func SortInputs(opType string, inputs []Input) {
	spec := opSpecs[opType]
	sort.SliceStable(inputs, func(i, j int) bool {
		oi, oj := spec.order(inputs[i].Param), spec.order(inputs[j].Param)
		if oi != oj {
			return oi < oj
		}
		return inputs[i].Param < inputs[j].Param
	})
}
