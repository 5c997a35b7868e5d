package runtime

import (
	"fmt"

	"github.com/anemll/anemll/internal/mil"
)

// call gives a kernel its inputs, parameters and output buffers.
type call struct {
	ctx *execCtx
	n   *node
}

// in returns the first binding of param, or nil.
func (c *call) in(p string) *Tensor {
	s := c.n.args[p]
	if len(s) == 0 {
		return nil
	}
	return c.ctx.vals[s[0]]
}

// ins returns every binding of a variadic param.
func (c *call) ins(p string) []*Tensor {
	s := c.n.args[p]
	out := make([]*Tensor, len(s))
	for i, x := range s {
		out[i] = c.ctx.vals[x]
	}
	return out
}

// need returns param p or an error if it is missing.
func (c *call) need(p string) (*Tensor, error) {
	t := c.in(p)
	if t == nil {
		return nil, fmt.Errorf("missing input %q", p)
	}
	return t, nil
}

// set stores output i.
func (c *call) set(i int, t *Tensor) { c.ctx.vals[c.n.outs[i]] = t }

// newOut returns an output tensor for output i of dt and shape backed by a
// reused buffer (contents undefined).
func (c *call) newOut(i int, dt mil.DType, shape []int) *Tensor {
	s := c.ctx.buf[c.n.outs[i]]
	n := numel(shape)
	t := &Tensor{DType: dt, Shape: shape}
	if isFloat(dt) {
		b := c.ctx.fbuf[s]
		if cap(b) < n {
			b = make([]float32, n)
			c.ctx.fbuf[s] = b
		}
		t.F = b[:n]
	} else {
		b := c.ctx.ibuf[s]
		if cap(b) < n {
			b = make([]int32, n)
			c.ctx.ibuf[s] = b
		}
		t.I = b[:n]
	}
	c.set(i, t)
	return t
}

// scratch returns reusable temporary buffer number k of n floats.
func (c *call) scratch(k, n int) []float32 {
	for len(c.ctx.scratch) <= k {
		c.ctx.scratch = append(c.ctx.scratch, nil)
	}
	b := c.ctx.scratch[k]
	if cap(b) < n {
		b = make([]float32, n)
		c.ctx.scratch[k] = b
	}
	return b[:n]
}

// ints returns an integer parameter's values (nil, nil if absent).
func (c *call) ints(p string) ([]int, error) {
	t := c.in(p)
	if t == nil {
		return nil, nil
	}
	if t.IsFloat() || t.DType == mil.String {
		return nil, fmt.Errorf("parameter %q must be integer, is %s", p, t.DType)
	}
	out := make([]int, len(t.I))
	for i, v := range t.I {
		out[i] = int(v)
	}
	return out, nil
}

// intOr returns a scalar integer parameter or def.
func (c *call) intOr(p string, def int) (int, error) {
	v, err := c.ints(p)
	if err != nil || v == nil {
		return def, err
	}
	if len(v) != 1 {
		return 0, fmt.Errorf("parameter %q must be a scalar", p)
	}
	return v[0], nil
}

// boolOr returns a scalar bool parameter or def.
func (c *call) boolOr(p string, def bool) (bool, error) {
	d := 0
	if def {
		d = 1
	}
	v, err := c.intOr(p, d)
	return v != 0, err
}

// boolsOr returns a bool vector parameter of length r (nil if absent).
func (c *call) bools(p string, r int) ([]bool, error) {
	v, err := c.ints(p)
	if err != nil || v == nil {
		return nil, err
	}
	if len(v) != r {
		return nil, fmt.Errorf("parameter %q has %d values, want %d", p, len(v), r)
	}
	out := make([]bool, r)
	for i, x := range v {
		out[i] = x != 0
	}
	return out, nil
}

// str returns a string parameter or def.
func (c *call) str(p, def string) (string, error) {
	t := c.in(p)
	if t == nil {
		return def, nil
	}
	if t.DType != mil.String || len(t.S) != 1 {
		return "", fmt.Errorf("parameter %q must be a string scalar", p)
	}
	return t.S[0], nil
}

// floatOr returns a scalar float parameter or def.
func (c *call) floatOr(p string, def float32) (float32, error) {
	t := c.in(p)
	if t == nil {
		return def, nil
	}
	if t.Len() != 1 {
		return 0, fmt.Errorf("parameter %q must be a scalar", p)
	}
	if t.IsFloat() {
		return t.F[0], nil
	}
	return float32(t.I[0]), nil
}

// strides returns row-major strides of shape.
func strides(shape []int) []int {
	s := make([]int, len(shape))
	n := 1
	for i := len(shape) - 1; i >= 0; i-- {
		s[i] = n
		n *= shape[i]
	}
	return s
}

// finish rounds an fp16 output in place (over the cores when large).
func finish(t *Tensor) {
	if t.DType == mil.Float16 {
		parallelRange(len(t.F), func(lo, hi int) { roundHalf(t.F[lo:hi]) })
	}
}

// view returns a tensor sharing t's data with a new shape.
func view(t *Tensor, shape []int) *Tensor {
	return &Tensor{DType: t.DType, Shape: shape, F: t.F, I: t.I, S: t.S, half: t.half}
}

var kernels map[string]kernel

func init() {
	kernels = map[string]kernel{}
	registerElementwise()
	registerShape()
	registerReduce()
	registerLinalg()
	kernels["read_state"] = opReadState
	kernels["write_state"] = opWriteState
}

func opReadState(c *call) error {
	t := c.ctx.st.t[c.n.state]
	c.set(0, t)
	return nil
}

func opWriteState(c *call) error {
	d, err := c.need("data")
	if err != nil {
		return err
	}
	cur := c.ctx.st.t[c.n.state]
	if d.DType != cur.DType || !equalInts(d.Shape, cur.Shape) {
		return fmt.Errorf("data %s does not match state %s", d, cur)
	}
	if sameData(d, cur) {
		return nil // slice_update already wrote in place
	}
	if !c.n.inplace {
		// A value read before is still used: the state gets a new buffer.
		cur = newStateTensor(cur.DType, cur.Shape)
		c.ctx.st.t[c.n.state] = cur
	}
	storeState(cur, d)
	return nil
}

func sameData(a, b *Tensor) bool {
	if len(a.half) > 0 && len(b.half) > 0 {
		return &a.half[0] == &b.half[0]
	}
	if len(a.F) > 0 && len(b.F) > 0 {
		return &a.F[0] == &b.F[0]
	}
	if len(a.I) > 0 && len(b.I) > 0 {
		return &a.I[0] == &b.I[0]
	}
	return false
}
