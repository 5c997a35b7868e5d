package runtime

import (
	"fmt"
	"math"
	"sort"

	"github.com/anemll/anemll/internal/gemm"
	"github.com/anemll/anemll/internal/mil"
)

// reduceAxes returns which axes of rank r param "axes" names (all when
// absent).
func (c *call) reduceAxes(r int) ([]bool, error) {
	axes, err := c.ints("axes")
	if err != nil {
		return nil, err
	}
	red := make([]bool, r)
	if axes == nil {
		for i := range red {
			red[i] = true
		}
		return red, nil
	}
	for _, a := range axes {
		i, err := mil.NormAxis(int64(a), r)
		if err != nil {
			return nil, err
		}
		red[i] = true
	}
	return red, nil
}

const (
	redSum = iota
	redMean
	redMax
	redMin
	redProd
	redSumSquare
	redL2
)

func reduceOp(kind int) kernel {
	return func(c *call) error {
		x, err := c.need("x")
		if err != nil {
			return err
		}
		keep, err := c.boolOr("keep_dims", false)
		if err != nil {
			return err
		}
		red, err := c.reduceAxes(x.Rank())
		if err != nil {
			return err
		}
		var outShape, keepShape []int
		count := 1
		for i, d := range x.Shape {
			if red[i] {
				count *= d
				keepShape = append(keepShape, 1)
				if keep {
					outShape = append(outShape, 1)
				}
			} else {
				keepShape = append(keepShape, d)
				outShape = append(outShape, d)
			}
		}
		if outShape == nil {
			outShape = []int{}
		}
		// Output strides seen from x's index space: 0 on reduced axes.
		ks := strides(keepShape)
		os := make([]int, x.Rank())
		for i := range os {
			if !red[i] {
				os[i] = ks[i]
			}
		}
		no := numel(keepShape)
		acc := make([]float64, no)
		init := 0.0
		switch kind {
		case redMax:
			init = math.Inf(-1)
		case redMin:
			init = math.Inf(1)
		case redProd:
			init = 1
		}
		for i := range acc {
			acc[i] = init
		}
		// Fast path: a float reduction over trailing axes is one contiguous
		// run of count values per output, summed in the same (index)
		// order as the general walk below; rows go over the cores.
		trailing := x.IsFloat() && count > 0
		for i := range red {
			if i > 0 && red[i-1] && !red[i] {
				trailing = false
			}
		}
		if trailing {
			per := max(1, elemChunk/count)
			gemm.ParallelFor((no+per-1)/per, min(no, per)*count, func(ch int) {
				for r := ch * per; r < min((ch+1)*per, no); r++ {
					acc[r] = reduceRun(kind, acc[r], x.F[r*count:(r+1)*count])
				}
			})
		} else {
			walk(x.Shape, 0, os, func(o, s, n, inner int) {
				for j := 0; j < n; j++ {
					accumulate(kind, &acc[s+j*inner], get(x, o+j))
				}
			})
		}
		out := c.newOut(0, x.DType, outShape)
		for i, v := range acc {
			switch kind {
			case redMean:
				v /= float64(count)
			case redL2:
				v = math.Sqrt(v)
			}
			if out.F != nil {
				out.F[i] = float32(v)
			} else {
				out.I[i] = wrapInt(x.DType, int32(v))
			}
		}
		finish(out)
		return nil
	}
}

// get returns element i of x as float64.
func get(x *Tensor, i int) float64 {
	if x.IsFloat() {
		return float64(x.F[i])
	}
	return float64(x.I[i])
}

// accumulate folds v into *p for a reduction of kind.
func accumulate(kind int, p *float64, v float64) {
	switch kind {
	case redSum, redMean:
		*p += v
	case redSumSquare, redL2:
		*p += v * v
	case redMax:
		if v > *p || v != v {
			*p = v
		}
	case redMin:
		if v < *p || v != v {
			*p = v
		}
	case redProd:
		*p *= v
	}
}

// reduceRun folds the values of run into acc in order, as accumulate does.
func reduceRun(kind int, acc float64, run []float32) float64 {
	switch kind {
	case redSum, redMean:
		for _, v := range run {
			acc += float64(v)
		}
	case redSumSquare, redL2:
		for _, v := range run {
			acc += float64(v) * float64(v)
		}
	default:
		for _, v := range run {
			accumulate(kind, &acc, float64(v))
		}
	}
	return acc
}

func opArgmax(c *call) error {
	x, err := c.need("x")
	if err != nil {
		return err
	}
	axis, err := c.intOr("axis", -1)
	if err != nil {
		return err
	}
	keep, err := c.boolOr("keep_dims", false)
	if err != nil {
		return err
	}
	dts, err := c.str("output_dtype", "int32")
	if err != nil {
		return err
	}
	dt, _ := mil.ParseDType(dts)
	if dt != mil.Int32 && dt != mil.UInt16 {
		return fmt.Errorf("output_dtype %q: %w", dts, ErrUnsupported)
	}
	a, err := mil.NormAxis(int64(axis), x.Rank())
	if err != nil {
		return err
	}
	var shape []int
	for i, d := range x.Shape {
		if i != a {
			shape = append(shape, d)
		} else if keep {
			shape = append(shape, 1)
		}
	}
	if shape == nil {
		shape = []int{}
	}
	out := c.newOut(0, dt, shape)
	outer, d, inner := numel(x.Shape[:a]), x.Shape[a], numel(x.Shape[a+1:])
	for o := 0; o < outer; o++ {
		for i := 0; i < inner; i++ {
			best, bi := math.Inf(-1), 0
			for j := 0; j < d; j++ {
				p := (o*d+j)*inner + i
				var v float64
				if x.IsFloat() {
					v = float64(x.F[p])
				} else {
					v = float64(x.I[p])
				}
				if v > best {
					best, bi = v, j
				}
			}
			out.I[o*inner+i] = wrapInt(dt, int32(bi))
		}
	}
	return nil
}

func opSoftmax(c *call) error {
	x, err := c.need("x")
	if err != nil {
		return err
	}
	if !x.IsFloat() {
		return fmt.Errorf("x is %s, want fp16 or fp32", x.DType)
	}
	axis, err := c.intOr("axis", -1)
	if err != nil {
		return err
	}
	a, err := mil.NormAxis(int64(axis), x.Rank())
	if err != nil {
		return err
	}
	out := c.newOut(0, x.DType, cloneInts(x.Shape))
	outer, d, inner := numel(x.Shape[:a]), x.Shape[a], numel(x.Shape[a+1:])
	for o := 0; o < outer; o++ {
		for i := 0; i < inner; i++ {
			base := o*d*inner + i
			m := float32(math.Inf(-1))
			for j := 0; j < d; j++ {
				m = max(m, x.F[base+j*inner])
			}
			var sum float32
			for j := 0; j < d; j++ {
				e := float32(math.Exp(float64(x.F[base+j*inner] - m)))
				out.F[base+j*inner] = e
				sum += e
			}
			for j := 0; j < d; j++ {
				out.F[base+j*inner] /= sum
			}
		}
	}
	finish(out)
	return nil
}

func opLayerNorm(c *call) error {
	x, err := c.need("x")
	if err != nil {
		return err
	}
	if !x.IsFloat() {
		return fmt.Errorf("x is %s, want fp16 or fp32", x.DType)
	}
	r := x.Rank()
	red, err := c.reduceAxes(r)
	if err != nil {
		return err
	}
	// Only trailing axes are supported (what layer norms use).
	var axes []int
	for i, b := range red {
		if b {
			axes = append(axes, i)
		}
	}
	sort.Ints(axes)
	for k, a := range axes {
		if a != r-len(axes)+k {
			return fmt.Errorf("layer_norm over non-trailing axes %v: %w", axes, ErrUnsupported)
		}
	}
	eps, err := c.floatOr("epsilon", 1e-5)
	if err != nil {
		return err
	}
	inner := numel(x.Shape[r-len(axes):])
	gamma, beta := c.in("gamma"), c.in("beta")
	for _, g := range []*Tensor{gamma, beta} {
		if g != nil && (!g.IsFloat() || g.Len() != inner) {
			return fmt.Errorf("gamma/beta %s does not fit normalised size %d", g, inner)
		}
	}
	out := c.newOut(0, x.DType, cloneInts(x.Shape))
	if inner == 0 {
		return nil
	}
	outer := x.Len() / inner
	for o := 0; o < outer; o++ {
		row := x.F[o*inner : (o+1)*inner]
		dst := out.F[o*inner : (o+1)*inner]
		var sum float64
		for _, v := range row {
			sum += float64(v)
		}
		mean := sum / float64(inner)
		var ss float64
		for _, v := range row {
			d := float64(v) - mean
			ss += d * d
		}
		inv := 1 / math.Sqrt(ss/float64(inner)+float64(eps))
		for j, v := range row {
			y := (float64(v) - mean) * inv
			if gamma != nil {
				y *= float64(gamma.F[j])
			}
			if beta != nil {
				y += float64(beta.F[j])
			}
			dst[j] = float32(y)
		}
	}
	finish(out)
	return nil
}

func registerReduce() {
	kernels["reduce_sum"] = reduceOp(redSum)
	kernels["reduce_mean"] = reduceOp(redMean)
	kernels["reduce_max"] = reduceOp(redMax)
	kernels["reduce_min"] = reduceOp(redMin)
	kernels["reduce_prod"] = reduceOp(redProd)
	kernels["reduce_sum_square"] = reduceOp(redSumSquare)
	kernels["reduce_l2_norm"] = reduceOp(redL2)
	kernels["reduce_argmax"] = opArgmax
	kernels["softmax"] = opSoftmax
	kernels["layer_norm"] = opLayerNorm
}
