package runtime

import (
	"fmt"
	"math"

	"github.com/anemll/anemll/internal/gemm"
	"github.com/anemll/anemll/internal/mil"
)

// broadcastShape returns the numpy broadcast of shapes (mil.Broadcast
// folded over them).
func broadcastShape(shapes ...[]int) ([]int, error) {
	var acc []int64
	for _, s := range shapes {
		b := make([]int64, len(s))
		for i, d := range s {
			b[i] = int64(d)
		}
		var err error
		if acc, err = mil.Broadcast(acc, b); err != nil {
			return nil, err
		}
	}
	return toInts(acc), nil
}

// bstrides returns src's element strides aligned to out (0 on broadcast
// axes).
func bstrides(src, out []int) []int {
	st := make([]int, len(out))
	s := strides(src)
	off := len(out) - len(src)
	for i, d := range src {
		if d != 1 {
			st[off+i] = s[i]
		}
	}
	return st
}

// eachRow walks out's rows (last axis) calling fn with the output offset,
// each input's offset, the row length and each input's last-axis stride.
func eachRow(out []int, ins [][]int, fn func(o int, offs []int, n int, inner []int)) {
	eachRowRange(out, ins, 0, -1, fn)
}

// eachRowRange is eachRow over rows r0 ≤ row < r1 only (r1 < 0: to the
// end).
func eachRowRange(out []int, ins [][]int, r0, r1 int, fn func(o int, offs []int, n int, inner []int)) {
	r := len(out)
	k := len(ins)
	st := make([][]int, k)
	for i, s := range ins {
		st[i] = bstrides(s, out)
	}
	total := numel(out)
	if total == 0 {
		return
	}
	n, inner := 1, make([]int, k)
	if r > 0 {
		n = out[r-1]
		for i := range st {
			inner[i] = st[i][r-1]
		}
	}
	rows := total / n
	if r1 < 0 || r1 > rows {
		r1 = rows
	}
	idx := make([]int, r)
	offs := make([]int, k)
	// Start the odometer at row r0.
	rem := r0
	for a := r - 2; a >= 0; a-- {
		idx[a] = rem % out[a]
		rem /= out[a]
		for i := range offs {
			offs[i] += idx[a] * st[i][a]
		}
	}
	for row := r0; row < r1; row++ {
		fn(row*n, offs, n, inner)
		// advance odometer over axes 0..r-2
		for a := r - 2; a >= 0; a-- {
			idx[a]++
			for i := range offs {
				offs[i] += st[i][a]
			}
			if idx[a] < out[a] {
				break
			}
			for i := range offs {
				offs[i] -= st[i][a] * out[a]
			}
			idx[a] = 0
		}
	}
}

// parallelRows is eachRow split over the cores in fixed chunks of rows
// when out is large; fn must write only the row it is given.
func parallelRows(out []int, ins [][]int, fn func(o int, offs []int, n int, inner []int)) {
	total := numel(out)
	n := 1
	if len(out) > 0 {
		n = out[len(out)-1]
	}
	if total < minParallelElems || n == 0 {
		eachRow(out, ins, fn)
		return
	}
	per := max(1, elemChunk/n)
	rows := total / n
	gemm.ParallelFor((rows+per-1)/per, minParallelMACs, func(i int) {
		eachRowRange(out, ins, i*per, min((i+1)*per, rows), fn)
	})
}

type binF func(a, b float32) float32
type binI func(a, b int32) int32
type cmpF func(a, b float32) bool
type cmpI func(a, b int32) bool

func binaryOp(ff binF, fi binI) kernel {
	return func(c *call) error {
		x, err := c.need("x")
		if err != nil {
			return err
		}
		y, err := c.need("y")
		if err != nil {
			return err
		}
		if x.DType != y.DType {
			return fmt.Errorf("x is %s but y is %s", x.DType, y.DType)
		}
		shape, err := broadcastShape(x.Shape, y.Shape)
		if err != nil {
			return err
		}
		out := c.newOut(0, x.DType, shape)
		if x.IsFloat() {
			xf, yf, of := x.F, y.F, out.F
			half := out.DType == mil.Float16
			if len(xf) == len(of) && len(yf) == len(of) {
				parallelRange(len(of), func(lo, hi int) {
					o, a, b := of[lo:hi], xf[lo:hi], yf[lo:hi]
					for i := range o {
						o[i] = ff(a[i], b[i])
					}
					if half {
						roundHalf(o)
					}
				})
			} else if len(yf) == 1 && len(xf) == len(of) {
				b := yf[0]
				parallelRange(len(of), func(lo, hi int) {
					o, a := of[lo:hi], xf[lo:hi]
					for i := range o {
						o[i] = ff(a[i], b)
					}
					if half {
						roundHalf(o)
					}
				})
			} else {
				parallelRows(shape, [][]int{x.Shape, y.Shape}, func(o int, offs []int, n int, in []int) {
					a, b := offs[0], offs[1]
					for j := 0; j < n; j++ {
						of[o+j] = ff(xf[a+j*in[0]], yf[b+j*in[1]])
					}
					if half {
						roundHalf(of[o : o+n])
					}
				})
			}
			return nil
		}
		if fi == nil {
			return fmt.Errorf("dtype %s: %w", x.DType, ErrUnsupported)
		}
		xi, yi, oi := x.I, y.I, out.I
		eachRow(shape, [][]int{x.Shape, y.Shape}, func(o int, offs []int, n int, in []int) {
			a, b := offs[0], offs[1]
			for j := 0; j < n; j++ {
				oi[o+j] = wrapInt(x.DType, fi(xi[a+j*in[0]], yi[b+j*in[1]]))
			}
		})
		return nil
	}
}

func compareOp(ff cmpF, fi cmpI) kernel {
	return func(c *call) error {
		x, err := c.need("x")
		if err != nil {
			return err
		}
		y, err := c.need("y")
		if err != nil {
			return err
		}
		if x.DType != y.DType {
			return fmt.Errorf("x is %s but y is %s", x.DType, y.DType)
		}
		shape, err := broadcastShape(x.Shape, y.Shape)
		if err != nil {
			return err
		}
		out := c.newOut(0, mil.Bool, shape)
		oi := out.I
		eachRow(shape, [][]int{x.Shape, y.Shape}, func(o int, offs []int, n int, in []int) {
			a, b := offs[0], offs[1]
			for j := 0; j < n; j++ {
				var r bool
				if x.IsFloat() {
					r = ff(x.F[a+j*in[0]], y.F[b+j*in[1]])
				} else {
					r = fi(x.I[a+j*in[0]], y.I[b+j*in[1]])
				}
				oi[o+j] = 0
				if r {
					oi[o+j] = 1
				}
			}
		})
		return nil
	}
}

func unaryOp(f func(float64) float64) kernel {
	return func(c *call) error {
		x, err := c.need("x")
		if err != nil {
			return err
		}
		if !x.IsFloat() {
			return fmt.Errorf("x is %s, want fp16 or fp32", x.DType)
		}
		out := c.newOut(0, x.DType, cloneInts(x.Shape))
		half := out.DType == mil.Float16
		parallelRange(len(out.F), func(lo, hi int) {
			o := out.F[lo:hi]
			for i, v := range x.F[lo:hi] {
				o[i] = float32(f(float64(v)))
			}
			if half {
				roundHalf(o)
			}
		})
		return nil
	}
}

func sigmoid(v float64) float64 { return 1 / (1 + math.Exp(-v)) }

// gelu formulas by the op's mode (MIL iOS15 gelu).
var geluModes = map[string]func(float64) float64{
	"EXACT": func(v float64) float64 { return 0.5 * v * (1 + math.Erf(v/math.Sqrt2)) },
	"TANH_APPROXIMATION": func(v float64) float64 {
		return 0.5 * v * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(v+0.044715*v*v*v)))
	},
	"SIGMOID_APPROXIMATION": func(v float64) float64 { return v * sigmoid(1.702*v) },
}

func opGelu(c *call) error {
	mode, err := c.str("mode", "EXACT")
	if err != nil {
		return err
	}
	f, ok := geluModes[mode]
	if !ok {
		return fmt.Errorf("gelu mode %q unknown (want EXACT, TANH_APPROXIMATION or SIGMOID_APPROXIMATION)", mode)
	}
	return unaryOp(f)(c)
}

func opRsqrt(c *call) error {
	x, err := c.need("x")
	if err != nil {
		return err
	}
	if !x.IsFloat() {
		return fmt.Errorf("x is %s, want fp16 or fp32", x.DType)
	}
	eps, err := c.floatOr("epsilon", 1e-12)
	if err != nil {
		return err
	}
	out := c.newOut(0, x.DType, cloneInts(x.Shape))
	for i, v := range x.F {
		out.F[i] = float32(1 / math.Sqrt(float64(v)+float64(eps)))
	}
	finish(out)
	return nil
}

func opIdentity(c *call) error {
	x, err := c.need("x")
	if err != nil {
		return err
	}
	c.set(0, view(x, cloneInts(x.Shape)))
	return nil
}

func opLogicalNot(c *call) error {
	x, err := c.need("x")
	if err != nil {
		return err
	}
	if x.DType != mil.Bool {
		return fmt.Errorf("x is %s, want bool", x.DType)
	}
	out := c.newOut(0, mil.Bool, cloneInts(x.Shape))
	for i, v := range x.I {
		out.I[i] = 1 - v
	}
	return nil
}

func opCast(c *call) error {
	x, err := c.need("x")
	if err != nil {
		return err
	}
	s, err := c.str("dtype", "")
	if err != nil {
		return err
	}
	dt, ok := mil.ParseDType(s)
	if !ok || !(isFloat(dt) || supportedInt(dt)) {
		return fmt.Errorf("cast to %q: %w", s, ErrUnsupported)
	}
	out := c.newOut(0, dt, cloneInts(x.Shape))
	switch {
	case isFloat(dt) && x.IsFloat():
		copy(out.F, x.F)
		finish(out)
	case isFloat(dt):
		for i, v := range x.I {
			out.F[i] = float32(v)
		}
		finish(out)
	case x.IsFloat():
		for i, v := range x.F {
			if dt == mil.Bool {
				out.I[i] = 0
				if v != 0 {
					out.I[i] = 1
				}
				continue
			}
			out.I[i] = wrapInt(dt, floatToInt32(v))
		}
	default:
		for i, v := range x.I {
			out.I[i] = wrapInt(dt, v)
		}
	}
	return nil
}

func opSelect(c *call) error {
	cond, err := c.need("cond")
	if err != nil {
		return err
	}
	a, err := c.need("a")
	if err != nil {
		return err
	}
	b, err := c.need("b")
	if err != nil {
		return err
	}
	if a.DType != b.DType {
		return fmt.Errorf("a is %s but b is %s", a.DType, b.DType)
	}
	shape, err := broadcastShape(cond.Shape, a.Shape, b.Shape)
	if err != nil {
		return err
	}
	out := c.newOut(0, a.DType, shape)
	truth := func(i int) bool {
		if cond.IsFloat() {
			return cond.F[i] != 0
		}
		return cond.I[i] != 0
	}
	eachRow(shape, [][]int{cond.Shape, a.Shape, b.Shape}, func(o int, offs []int, n int, in []int) {
		for j := 0; j < n; j++ {
			pick, k := b, offs[2]+j*in[2]
			if truth(offs[0] + j*in[0]) {
				pick, k = a, offs[1]+j*in[1]
			}
			if out.F != nil {
				out.F[o+j] = pick.F[k]
			} else {
				out.I[o+j] = pick.I[k]
			}
		}
	})
	return nil
}

// ipow is integer pow with int32 wrap-around; negative exponents give the
// truncated quotient 1/a^-b.
func ipow(a, b int32) int32 {
	if b < 0 {
		if a == 1 {
			return 1
		}
		if a == -1 {
			if b%2 == 0 {
				return 1
			}
			return -1
		}
		return 0
	}
	// Square-and-multiply: int32 products wrap modulo 2^32, so this equals
	// b repeated multiplications.
	r := int32(1)
	for ; b > 0; b >>= 1 {
		if b&1 != 0 {
			r *= a
		}
		a *= a
	}
	return r
}

func registerElementwise() {
	kernels["add"] = binaryOp(func(a, b float32) float32 { return a + b }, func(a, b int32) int32 { return a + b })
	kernels["sub"] = binaryOp(func(a, b float32) float32 { return a - b }, func(a, b int32) int32 { return a - b })
	kernels["mul"] = binaryOp(func(a, b float32) float32 { return a * b }, func(a, b int32) int32 { return a * b })
	kernels["real_div"] = binaryOp(func(a, b float32) float32 { return a / b }, func(a, b int32) int32 {
		if b == 0 {
			return 0
		}
		return floatToInt32(float32(float64(a) / float64(b)))
	})
	kernels["maximum"] = binaryOp(func(a, b float32) float32 { return max(a, b) }, func(a, b int32) int32 { return max(a, b) })
	kernels["minimum"] = binaryOp(func(a, b float32) float32 { return min(a, b) }, func(a, b int32) int32 { return min(a, b) })
	kernels["pow"] = binaryOp(func(a, b float32) float32 { return float32(math.Pow(float64(a), float64(b))) }, ipow)
	kernels["floor_div"] = binaryOp(func(a, b float32) float32 { return float32(math.Floor(float64(a) / float64(b))) }, func(a, b int32) int32 {
		if b == 0 {
			return 0
		}
		q := a / b
		if (a%b != 0) && ((a < 0) != (b < 0)) {
			q--
		}
		return q
	})
	kernels["greater"] = compareOp(func(a, b float32) bool { return a > b }, func(a, b int32) bool { return a > b })
	kernels["greater_equal"] = compareOp(func(a, b float32) bool { return a >= b }, func(a, b int32) bool { return a >= b })
	kernels["less"] = compareOp(func(a, b float32) bool { return a < b }, func(a, b int32) bool { return a < b })
	kernels["less_equal"] = compareOp(func(a, b float32) bool { return a <= b }, func(a, b int32) bool { return a <= b })
	kernels["equal"] = compareOp(func(a, b float32) bool { return a == b }, func(a, b int32) bool { return a == b })
	kernels["not_equal"] = compareOp(func(a, b float32) bool { return a != b }, func(a, b int32) bool { return a != b })
	kernels["logical_and"] = compareOp(func(a, b float32) bool { return a != 0 && b != 0 }, func(a, b int32) bool { return a != 0 && b != 0 })
	kernels["logical_or"] = compareOp(func(a, b float32) bool { return a != 0 || b != 0 }, func(a, b int32) bool { return a != 0 || b != 0 })
	kernels["logical_not"] = opLogicalNot
	kernels["exp"] = unaryOp(math.Exp)
	kernels["sqrt"] = unaryOp(math.Sqrt)
	kernels["rsqrt"] = opRsqrt
	kernels["silu"] = unaryOp(func(v float64) float64 { return v * sigmoid(v) })
	kernels["sigmoid"] = unaryOp(sigmoid)
	kernels["tanh"] = unaryOp(math.Tanh)
	kernels["relu"] = unaryOp(func(v float64) float64 { return max(v, 0) })
	kernels["abs"] = unaryOp(math.Abs)
	kernels["neg"] = unaryOp(func(v float64) float64 { return -v })
	kernels["square"] = unaryOp(func(v float64) float64 { return v * v })
	kernels["log"] = unaryOp(math.Log)
	kernels["floor"] = unaryOp(math.Floor)
	kernels["ceil"] = unaryOp(math.Ceil)
	kernels["sin"] = unaryOp(math.Sin)
	kernels["cos"] = unaryOp(math.Cos)
	kernels["erf"] = unaryOp(math.Erf)
	kernels["gelu"] = opGelu
	kernels["identity"] = opIdentity
	kernels["cast"] = opCast
	kernels["select"] = opSelect
}
