package runtime

import (
	"fmt"
	"math"

	"github.com/anemll/anemll/internal/gemm"
)

// transpose2 writes the transpose of src (rows×cols) to dst (cols×rows).
func transpose2(dst, src []float32, rows, cols int) {
	const bs = 32
	for i0 := 0; i0 < rows; i0 += bs {
		for j0 := 0; j0 < cols; j0 += bs {
			for i := i0; i < min(i0+bs, rows); i++ {
				for j := j0; j < min(j0+bs, cols); j++ {
					dst[j*rows+i] = src[i*cols+j]
				}
			}
		}
	}
}

func addBias(out []float32, bias *Tensor, rows, cols int, perRow bool) error {
	if bias == nil {
		return nil
	}
	if !bias.IsFloat() {
		return fmt.Errorf("bias is %s", bias.DType)
	}
	if perRow {
		if bias.Len() != rows {
			return fmt.Errorf("bias has %d values, want %d", bias.Len(), rows)
		}
		for i := 0; i < rows; i++ {
			b := bias.F[i]
			r := out[i*cols : (i+1)*cols]
			for j := range r {
				r[j] += b
			}
		}
		return nil
	}
	if bias.Len() != cols {
		return fmt.Errorf("bias has %d values, want %d", bias.Len(), cols)
	}
	for i := 0; i < rows; i++ {
		r := out[i*cols : (i+1)*cols]
		for j := range r {
			r[j] += bias.F[j]
		}
	}
	return nil
}

func floats(ts ...*Tensor) error {
	for _, t := range ts {
		if t != nil && !t.IsFloat() {
			return fmt.Errorf("%s: only fp16/fp32 are supported: %w", t, ErrUnsupported)
		}
	}
	return nil
}

func opLinear(c *call) error {
	x, err := c.need("x")
	if err != nil {
		return err
	}
	w, err := c.need("weight")
	if err != nil {
		return err
	}
	bias := c.in("bias")
	if err := floats(x, w, bias); err != nil {
		return err
	}
	if w.Rank() != 2 || x.Rank() < 1 || x.Shape[x.Rank()-1] != w.Shape[1] {
		return fmt.Errorf("x %v does not fit weight %v", x.Shape, w.Shape)
	}
	k, n := w.Shape[1], w.Shape[0]
	shape := append(cloneInts(x.Shape[:x.Rank()-1]), n)
	m := numel(shape) / max(n, 1)
	out := c.newOut(0, x.DType, shape)
	if pw, ok := packedOf(w); ok {
		gemmPacked(out.F, pw, x.F, n, m, k, false)
	} else {
		gemm.NT(out.F, x.F, w.F, m, n, k)
	}
	if err := addBias(out.F, bias, m, n, false); err != nil {
		return err
	}
	finish(out)
	return nil
}

func opMatmul(c *call) error {
	x, err := c.need("x")
	if err != nil {
		return err
	}
	y, err := c.need("y")
	if err != nil {
		return err
	}
	if err := floats(x, y); err != nil {
		return err
	}
	tx, err := c.boolOr("transpose_x", false)
	if err != nil {
		return err
	}
	ty, err := c.boolOr("transpose_y", false)
	if err != nil {
		return err
	}
	if x.Rank() < 2 || y.Rank() < 2 {
		return fmt.Errorf("matmul of rank %d and %d: %w", x.Rank(), y.Rank(), ErrUnsupported)
	}
	xr, yr := x.Rank(), y.Rank()
	xm, xk := x.Shape[xr-2], x.Shape[xr-1]
	if tx {
		xm, xk = xk, xm
	}
	yk, yn := y.Shape[yr-2], y.Shape[yr-1]
	if ty {
		yk, yn = yn, yk
	}
	if xk != yk {
		return fmt.Errorf("inner dimensions %d and %d differ (x %v, y %v)", xk, yk, x.Shape, y.Shape)
	}
	batch, err := broadcastShape(x.Shape[:xr-2], y.Shape[:yr-2])
	if err != nil {
		return err
	}
	m, n, k := xm, yn, xk
	shape := append(cloneInts(batch), m, n)
	out := c.newOut(0, x.DType, shape)
	nb := numel(batch)
	// Offsets of each batch's x and y matrices.
	xo := make([]int, 0, nb)
	yo := make([]int, 0, nb)
	eachRow(append(cloneInts(batch), 1), [][]int{append(cloneInts(x.Shape[:xr-2]), 1), append(cloneInts(y.Shape[:yr-2]), 1)},
		func(o int, offs []int, _ int, _ []int) {
			xo = append(xo, offs[0]*m*k)
			yo = append(yo, offs[1]*k*n)
		})
	// Bring x to an m×k layout; y is used as it is: n×k (transpose_y, an
	// NT product) or k×n (an NN product).
	aBuf := x.F
	nx := numel(x.Shape[:xr-2])
	if tx {
		aBuf = c.scratch(0, x.Len())
		for i := 0; i < nx; i++ {
			transpose2(aBuf[i*m*k:(i+1)*m*k], x.F[i*m*k:(i+1)*m*k], k, m)
		}
	}
	switch {
	case nb == 1 && ty:
		gemm.NT(out.F, aBuf[xo[0]:xo[0]+m*k], y.F[yo[0]:yo[0]+n*k], m, n, k)
	case nb == 1:
		gemmNN(out.F, aBuf[xo[0]:xo[0]+m*k], y.F[yo[0]:yo[0]+n*k], m, n, k)
	case ty:
		gemm.ParallelFor(nb, m*n*k, func(i int) {
			gemm.Tile(out.F[i*m*n:(i+1)*m*n], n, 1, aBuf[xo[i]:xo[i]+m*k], y.F[yo[i]:yo[i]+n*k], k, 0, m, 0, n)
		})
	default:
		// One job per output row of every batch.
		gemm.ParallelFor(nb*m, n*k, func(job int) {
			i, r := job/m, job%m
			rowNN(out.F[(i*m+r)*n:(i*m+r+1)*n], aBuf[xo[i]+r*k:xo[i]+(r+1)*k], y.F[yo[i]:yo[i]+n*k], k, n)
		})
	}
	finish(out)
	return nil
}

// convParams are resolved conv hyper-parameters for 2 spatial dims (1-D
// convs use H = 1).
type convParams struct {
	n, cin, h, w       int
	cout, cpg, kh, kw  int
	sh, sw, dh, dw     int
	pt, pl             int // padding before (top, left)
	oh, ow, groups, sp int
}

func (c *call) convParams(x, wt *Tensor) (*convParams, error) {
	sp := x.Rank() - 2
	if sp < 1 || sp > 2 || wt.Rank() != x.Rank() {
		return nil, fmt.Errorf("conv of x %v with weight %v: only 1-D and 2-D: %w", x.Shape, wt.Shape, ErrUnsupported)
	}
	p := &convParams{sp: sp, n: x.Shape[0], cin: x.Shape[1], cout: wt.Shape[0], cpg: wt.Shape[1], h: 1, kh: 1}
	if sp == 2 {
		p.h, p.w, p.kh, p.kw = x.Shape[2], x.Shape[3], wt.Shape[2], wt.Shape[3]
	} else {
		p.w, p.kw = x.Shape[2], wt.Shape[2]
	}
	g, err := c.intOr("groups", 1)
	if err != nil {
		return nil, err
	}
	if g <= 0 || p.cin != p.cpg*g || p.cout%g != 0 {
		return nil, fmt.Errorf("conv channels: x %v, weight %v, groups %d", x.Shape, wt.Shape, g)
	}
	p.groups = g
	get := func(name string, def int, n int) ([]int, error) {
		v, err := c.ints(name)
		if err != nil {
			return nil, err
		}
		if v == nil {
			v = make([]int, n)
			for i := range v {
				v[i] = def
			}
		}
		if len(v) != n {
			return nil, fmt.Errorf("%s %v needs %d values", name, v, n)
		}
		return v, nil
	}
	st, err := get("strides", 1, sp)
	if err != nil {
		return nil, err
	}
	dl, err := get("dilations", 1, sp)
	if err != nil {
		return nil, err
	}
	pad, err := get("pad", 0, 2*sp)
	if err != nil {
		return nil, err
	}
	pt, err := c.str("pad_type", "valid")
	if err != nil {
		return nil, err
	}
	if sp == 1 {
		st, dl, pad = []int{1, st[0]}, []int{1, dl[0]}, []int{0, 0, pad[0], pad[1]}
	}
	p.sh, p.sw, p.dh, p.dw = st[0], st[1], dl[0], dl[1]
	if p.sh <= 0 || p.sw <= 0 || p.dh <= 0 || p.dw <= 0 {
		return nil, fmt.Errorf("strides %v and dilations %v must be positive", st, dl)
	}
	size := func(in, k, s, d, pb, pa int) int { return (in+pb+pa-(k-1)*d-1)/s + 1 }
	switch pt {
	case "valid":
		p.oh, p.ow = size(p.h, p.kh, p.sh, p.dh, 0, 0), size(p.w, p.kw, p.sw, p.dw, 0, 0)
	case "custom":
		p.pt, p.pl = pad[0], pad[2]
		p.oh, p.ow = size(p.h, p.kh, p.sh, p.dh, pad[0], pad[1]), size(p.w, p.kw, p.sw, p.dw, pad[2], pad[3])
	case "same", "same_lower":
		p.oh, p.ow = (p.h+p.sh-1)/p.sh, (p.w+p.sw-1)/p.sw
		tot := func(in, out, k, s, d int) int { return max((out-1)*s+(k-1)*d+1-in, 0) }
		th, tw := tot(p.h, p.oh, p.kh, p.sh, p.dh), tot(p.w, p.ow, p.kw, p.sw, p.dw)
		if pt == "same" {
			p.pt, p.pl = th/2, tw/2
		} else {
			p.pt, p.pl = (th+1)/2, (tw+1)/2
		}
	default:
		return nil, fmt.Errorf("pad_type %q: %w", pt, ErrUnsupported)
	}
	if p.oh <= 0 || p.ow <= 0 {
		return nil, fmt.Errorf("conv output would be empty (x %v, weight %v)", x.Shape, wt.Shape)
	}
	return p, nil
}

func opConv(c *call) error {
	x, err := c.need("x")
	if err != nil {
		return err
	}
	wt, err := c.need("weight")
	if err != nil {
		return err
	}
	bias := c.in("bias")
	if err := floats(x, wt, bias); err != nil {
		return err
	}
	p, err := c.convParams(x, wt)
	if err != nil {
		return err
	}
	if bias != nil && bias.Len() != p.cout {
		return fmt.Errorf("bias has %d values, want %d", bias.Len(), p.cout)
	}
	shape := []int{p.n, p.cout, p.oh, p.ow}
	if p.sp == 1 {
		shape = []int{p.n, p.cout, p.ow}
	}
	out := c.newOut(0, x.DType, shape)
	hw := p.oh * p.ow
	if p.kh == 1 && p.kw == 1 && p.groups == 1 && p.sh == 1 && p.sw == 1 && p.pt == 0 && p.pl == 0 && hw == p.h*p.w {
		// 1×1: out[n] (Cout×T) = W (Cout×Cin) · x[n] (Cin×T).
		for b := 0; b < p.n; b++ {
			xb := x.F[b*p.cin*hw : (b+1)*p.cin*hw]
			ob := out.F[b*p.cout*hw : (b+1)*p.cout*hw]
			bt := xb
			if hw > 1 {
				bt = c.scratch(0, len(xb))
				transpose2(bt, xb, p.cin, hw)
			}
			if pw, ok := packedOf(wt); ok {
				gemmPacked(ob, pw, bt, p.cout, hw, p.cin, true)
			} else {
				gemm.NT(ob, wt.F, bt, p.cout, hw, p.cin)
			}
			if err := addBias(ob, bias, p.cout, hw, true); err != nil {
				return err
			}
		}
		finish(out)
		return nil
	}
	convDirect(out.F, x.F, weightFloats(wt), bias, p)
	finish(out)
	return nil
}

// convDirect is the general grouped, strided, dilated, padded conv.
func convDirect(out, x, w []float32, bias *Tensor, p *convParams) {
	opg := p.cout / p.groups
	gemm.ParallelFor(p.n*p.cout, p.oh*p.ow*p.cpg*p.kh*p.kw, func(job int) {
		b, co := job/p.cout, job%p.cout
		g := co / opg
		ob := out[(b*p.cout+co)*p.oh*p.ow:]
		for oy := 0; oy < p.oh; oy++ {
			for ox := 0; ox < p.ow; ox++ {
				var s float32
				if bias != nil {
					s = bias.F[co]
				}
				for ci := 0; ci < p.cpg; ci++ {
					xc := x[(b*p.cin+g*p.cpg+ci)*p.h*p.w:]
					wc := w[(co*p.cpg+ci)*p.kh*p.kw:]
					for ky := 0; ky < p.kh; ky++ {
						iy := oy*p.sh - p.pt + ky*p.dh
						if iy < 0 || iy >= p.h {
							continue
						}
						for kx := 0; kx < p.kw; kx++ {
							ix := ox*p.sw - p.pl + kx*p.dw
							if ix < 0 || ix >= p.w {
								continue
							}
							s += xc[iy*p.w+ix] * wc[ky*p.kw+kx]
						}
					}
				}
				ob[oy*p.ow+ox] = s
			}
		}
	})
}

// opSDPA computes softmax(q·kᵀ/√E + mask)·v per batch (mask: bool keeps
// where true, float is added). It rounds only its output.
func opSDPA(c *call) error {
	q, err := c.need("query")
	if err != nil {
		return err
	}
	k, err := c.need("key")
	if err != nil {
		return err
	}
	v, err := c.need("value")
	if err != nil {
		return err
	}
	mask := c.in("attn_mask")
	if err := floats(q, k, v); err != nil {
		return err
	}
	r := q.Rank()
	if r < 2 || k.Rank() != r || v.Rank() != r || !equalInts(q.Shape[:r-2], k.Shape[:r-2]) || !equalInts(k.Shape[:r-2], v.Shape[:r-2]) {
		return fmt.Errorf("query %v, key %v, value %v: batch dims must match: %w", q.Shape, k.Shape, v.Shape, ErrUnsupported)
	}
	L, E := q.Shape[r-2], q.Shape[r-1]
	S, EV := k.Shape[r-2], v.Shape[r-1]
	if k.Shape[r-1] != E || v.Shape[r-2] != S {
		return fmt.Errorf("query %v, key %v, value %v do not fit", q.Shape, k.Shape, v.Shape)
	}
	shape := append(cloneInts(q.Shape[:r-1]), EV)
	out := c.newOut(0, q.DType, shape)
	nb := numel(q.Shape[:r-2])
	var mf []float32
	var mi []int32
	if mask != nil {
		full := append(cloneInts(q.Shape[:r-2]), L, S)
		if _, err := broadcastShape(mask.Shape, full); err != nil {
			return err
		}
		if mask.IsFloat() {
			mt := c.scratch(0, numel(full))
			eachRow(full, [][]int{mask.Shape}, func(o int, offs []int, n int, in []int) {
				for j := 0; j < n; j++ {
					mt[o+j] = mask.F[offs[0]+j*in[0]]
				}
			})
			mf = mt
		} else {
			mb := make([]int32, numel(full))
			eachRow(full, [][]int{mask.Shape}, func(o int, offs []int, n int, in []int) {
				for j := 0; j < n; j++ {
					mb[o+j] = mask.I[offs[0]+j*in[0]]
				}
			})
			mi = mb
		}
	}
	scale := float32(1 / math.Sqrt(float64(E)))
	gemm.ParallelFor(nb*L, S*(E+EV), func(job int) {
		b, i := job/L, job%L
		qi := q.F[(b*L+i)*E : (b*L+i+1)*E]
		sc := make([]float32, S)
		m := float32(math.Inf(-1))
		for j := 0; j < S; j++ {
			s := dot(qi, k.F[(b*S+j)*E:(b*S+j+1)*E]) * scale
			if mf != nil {
				s += mf[(b*L+i)*S+j]
			}
			if mi != nil && mi[(b*L+i)*S+j] == 0 {
				s = float32(math.Inf(-1))
			}
			sc[j] = s
			m = max(m, s)
		}
		var sum float32
		for j := range sc {
			sc[j] = float32(math.Exp(float64(sc[j] - m)))
			sum += sc[j]
		}
		o := out.F[(b*L+i)*EV : (b*L+i+1)*EV]
		clear(o)
		for j, p := range sc {
			p /= sum
			vr := v.F[(b*S+j)*EV : (b*S+j+1)*EV]
			for e := range o {
				o[e] += p * vr[e]
			}
		}
	})
	finish(out)
	return nil
}

func registerLinalg() {
	kernels["linear"] = opLinear
	kernels["matmul"] = opMatmul
	kernels["conv"] = opConv
	kernels["scaled_dot_product_attention"] = opSDPA
}
