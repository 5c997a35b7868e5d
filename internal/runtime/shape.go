package runtime

import (
	"errors"
	"fmt"

	"github.com/anemll/anemll/internal/fp16"
	"github.com/anemll/anemll/internal/mil"
)

// mergeAxes returns shape and st with size-1 axes dropped and each pair of
// adjacent axes fused where the outer stride is the inner one times the
// inner size, so that a strided walk over them visits the same elements
// in the same order with longer rows.
func mergeAxes(shape, st []int) ([]int, []int) {
	ms := make([]int, 0, len(shape))
	mt := make([]int, 0, len(shape))
	for a, d := range shape {
		if d == 1 {
			continue
		}
		if k := len(ms) - 1; k >= 0 && mt[k] == st[a]*d {
			ms[k] *= d
			mt[k] = st[a]
			continue
		}
		ms = append(ms, d)
		mt = append(mt, st[a])
	}
	return ms, mt
}

// stridedCopy fills dst (contiguous, shape) from src starting at off with
// per-axis element strides st.
func stridedCopy[T any](dst, src []T, shape []int, off int, st []int) {
	shape, st = mergeAxes(shape, st)
	walk(shape, off, st, func(o, s, n, inner int) {
		if inner == 1 {
			copy(dst[o:o+n], src[s:s+n])
			return
		}
		for j := 0; j < n; j++ {
			dst[o+j] = src[s+j*inner]
		}
	})
}

// stridedScatter writes src (contiguous, shape) into dst at off with
// per-axis strides st.
func stridedScatter[T any](dst, src []T, shape []int, off int, st []int) {
	shape, st = mergeAxes(shape, st)
	walk(shape, off, st, func(o, s, n, inner int) {
		if inner == 1 {
			copy(dst[s:s+n], src[o:o+n])
			return
		}
		for j := 0; j < n; j++ {
			dst[s+j*inner] = src[o+j]
		}
	})
}

// halfStridedCopy is stridedCopy from half bits, widening to fp32.
func halfStridedCopy(dst []float32, src []uint16, shape []int, off int, st []int) {
	shape, st = mergeAxes(shape, st)
	walk(shape, off, st, func(o, s, n, inner int) {
		if inner == 1 {
			halfToFloat(dst[o:o+n], src[s:s+n])
			return
		}
		for j := 0; j < n; j++ {
			dst[o+j] = fp16.Bits(src[s+j*inner]).Float32()
		}
	})
}

// halfStridedScatter is stridedScatter of fp16 values (exact halves) into
// half bits.
func halfStridedScatter(dst []uint16, src []float32, shape []int, off int, st []int) {
	shape, st = mergeAxes(shape, st)
	walk(shape, off, st, func(o, s, n, inner int) {
		if inner == 1 {
			floatToHalf(dst[s:s+n], src[o:o+n])
			return
		}
		for j := 0; j < n; j++ {
			dst[s+j*inner] = uint16(fp16.FromFloat32(src[o+j]))
		}
	})
}

// walk visits the rows of a contiguous shape: o is the contiguous offset,
// s the strided offset, n the row length and inner the last-axis stride.
func walk(shape []int, off int, st []int, fn func(o, s, n, inner int)) {
	total := numel(shape)
	if total == 0 {
		return
	}
	r := len(shape)
	if r == 0 {
		fn(0, off, 1, 1)
		return
	}
	n, inner := shape[r-1], st[r-1]
	idx := make([]int, r)
	s := off
	for o := 0; o < total; o += n {
		fn(o, s, n, inner)
		for a := r - 2; a >= 0; a-- {
			idx[a]++
			s += st[a]
			if idx[a] < shape[a] {
				break
			}
			s -= st[a] * shape[a]
			idx[a] = 0
		}
	}
}

// copyStrided moves elements of src into a new output of shape.
func copyStrided(out, src *Tensor, off int, st []int) {
	if out.F != nil {
		stridedCopy(out.F, src.F, out.Shape, off, st)
	} else {
		stridedCopy(out.I, src.I, out.Shape, off, st)
	}
}

func opTranspose(c *call) error {
	x, err := c.need("x")
	if err != nil {
		return err
	}
	perm, err := c.ints("perm")
	if err != nil {
		return err
	}
	r := x.Rank()
	if len(perm) != r {
		return fmt.Errorf("perm %v does not fit rank %d", perm, r)
	}
	xs := strides(x.Shape)
	shape := make([]int, r)
	st := make([]int, r)
	seen := make([]bool, r)
	for i, p := range perm {
		a, err := mil.NormAxis(int64(p), r)
		if err != nil || seen[a] {
			return fmt.Errorf("perm %v is not a permutation", perm)
		}
		seen[a] = true
		shape[i], st[i] = x.Shape[a], xs[a]
	}
	out := c.newOut(0, x.DType, shape)
	copyStrided(out, x, 0, st)
	return nil
}

func opReshape(c *call) error {
	x, err := c.need("x")
	if err != nil {
		return err
	}
	target, err := c.ints("shape")
	if err != nil {
		return fmt.Errorf("reshape: %w", err)
	}
	if target == nil {
		return errors.New("reshape needs a shape")
	}
	in := make([]int64, x.Rank())
	for i, d := range x.Shape {
		in[i] = int64(d)
	}
	t := make([]int64, len(target))
	for i, d := range target {
		t[i] = int64(d)
	}
	s, err := mil.ReshapeShape(in, t)
	if err != nil {
		return err
	}
	shape := toInts(s)
	if numel(shape) != x.Len() {
		return fmt.Errorf("cannot reshape %v to %v", x.Shape, target)
	}
	c.set(0, view(x, shape))
	return nil
}

func opExpandDims(c *call) error {
	x, err := c.need("x")
	if err != nil {
		return err
	}
	axes, err := c.ints("axes")
	if err != nil {
		return err
	}
	r := x.Rank() + len(axes)
	ins := make([]bool, r)
	for _, a := range axes {
		i, err := mil.NormAxis(int64(a), r)
		if err != nil {
			return err
		}
		if ins[i] {
			return fmt.Errorf("axes %v repeat an axis", axes)
		}
		ins[i] = true
	}
	shape := make([]int, 0, r)
	j := 0
	for i := 0; i < r; i++ {
		if ins[i] {
			shape = append(shape, 1)
		} else {
			shape = append(shape, x.Shape[j])
			j++
		}
	}
	c.set(0, view(x, shape))
	return nil
}

func opSqueeze(c *call) error {
	x, err := c.need("x")
	if err != nil {
		return err
	}
	axes, err := c.ints("axes")
	if err != nil {
		return err
	}
	drop := make([]bool, x.Rank())
	if axes == nil {
		for i, d := range x.Shape {
			drop[i] = d == 1
		}
	}
	for _, a := range axes {
		i, err := mil.NormAxis(int64(a), x.Rank())
		if err != nil {
			return err
		}
		if x.Shape[i] != 1 {
			return fmt.Errorf("cannot squeeze axis %d of %v", a, x.Shape)
		}
		drop[i] = true
	}
	shape := []int{}
	for i, d := range x.Shape {
		if !drop[i] {
			shape = append(shape, d)
		}
	}
	c.set(0, view(x, shape))
	return nil
}

func opTile(c *call) error {
	x, err := c.need("x")
	if err != nil {
		return err
	}
	reps, err := c.ints("reps")
	if err != nil {
		return err
	}
	r := x.Rank()
	if len(reps) != r {
		return fmt.Errorf("reps %v does not fit rank %d", reps, r)
	}
	shape := make([]int, r)
	for i, k := range reps {
		if k < 0 {
			return fmt.Errorf("negative reps %v", reps)
		}
		shape[i] = x.Shape[i] * k
	}
	out := c.newOut(0, x.DType, shape)
	if out.Len() == 0 {
		return nil
	}
	// Tile = strided copy of x viewed with an extra repeat axis per axis
	// (stride 0).
	vs := make([]int, 0, 2*r)
	st := make([]int, 0, 2*r)
	xs := strides(x.Shape)
	for i := range reps {
		vs = append(vs, reps[i], x.Shape[i])
		st = append(st, 0, xs[i])
	}
	if out.F != nil {
		stridedCopy(out.F, x.F, vs, 0, st)
	} else {
		stridedCopy(out.I, x.I, vs, 0, st)
	}
	return nil
}

func opConcat(c *call) error {
	vals := c.ins("values")
	if len(vals) == 0 {
		return fmt.Errorf("concat needs values")
	}
	axis, err := c.intOr("axis", 0)
	if err != nil {
		return err
	}
	inter, err := c.boolOr("interleave", false)
	if err != nil {
		return err
	}
	first := vals[0]
	a, err := mil.NormAxis(int64(axis), first.Rank())
	if err != nil {
		return err
	}
	shape := cloneInts(first.Shape)
	shape[a] = 0
	for _, v := range vals {
		if v.DType != first.DType || v.Rank() != first.Rank() {
			return fmt.Errorf("concat of %s and %s", first, v)
		}
		for i := range shape {
			if i != a && v.Shape[i] != first.Shape[i] {
				return fmt.Errorf("concat of %v and %v off axis %d", first.Shape, v.Shape, a)
			}
			if inter && v.Shape[a] != first.Shape[a] {
				return fmt.Errorf("interleaved concat needs equal shapes, have %v and %v", first.Shape, v.Shape)
			}
		}
		shape[a] += v.Shape[a]
	}
	out := c.newOut(0, first.DType, shape)
	outer := numel(shape[:a])
	inner := numel(shape[a+1:])
	if !inter {
		o := 0
		for k := 0; k < outer; k++ {
			for _, v := range vals {
				n := v.Shape[a] * inner
				if out.F != nil {
					copy(out.F[o:o+n], v.F[k*n:k*n+n])
				} else {
					copy(out.I[o:o+n], v.I[k*n:k*n+n])
				}
				o += n
			}
		}
		return nil
	}
	d := first.Shape[a]
	o := 0
	for k := 0; k < outer; k++ {
		for j := 0; j < d; j++ {
			for _, v := range vals {
				s := (k*d + j) * inner
				if out.F != nil {
					copy(out.F[o:o+inner], v.F[s:s+inner])
				} else {
					copy(out.I[o:o+inner], v.I[s:s+inner])
				}
				o += inner
			}
		}
	}
	return nil
}

func opSplit(c *call) error {
	x, err := c.need("x")
	if err != nil {
		return err
	}
	axis, err := c.intOr("axis", 0)
	if err != nil {
		return err
	}
	a, err := mil.NormAxis(int64(axis), x.Rank())
	if err != nil {
		return err
	}
	sizes, err := c.ints("split_sizes")
	if err != nil {
		return err
	}
	if sizes == nil {
		k, err := c.intOr("num_splits", 0)
		if err != nil {
			return err
		}
		if k <= 0 || x.Shape[a]%k != 0 {
			return fmt.Errorf("cannot split %v into %d along axis %d", x.Shape, k, a)
		}
		for i := 0; i < k; i++ {
			sizes = append(sizes, x.Shape[a]/k)
		}
	}
	sum := 0
	for _, s := range sizes {
		if s < 0 {
			return fmt.Errorf("negative split size in %v", sizes)
		}
		sum += s
	}
	if sum != x.Shape[a] || len(sizes) != len(c.n.outs) {
		return fmt.Errorf("split sizes %v do not fit axis %d of %v into %d outputs", sizes, a, x.Shape, len(c.n.outs))
	}
	xs := strides(x.Shape)
	begin := 0
	for i, s := range sizes {
		shape := cloneInts(x.Shape)
		shape[a] = s
		out := c.newOut(i, x.DType, shape)
		copyStrided(out, x, begin*xs[a], xs)
		begin += s
	}
	return nil
}

// sliceSpec resolves slice_by_index parameters against x: the first index,
// count and step of each axis, and which axes are squeezed.
type sliceSpec struct {
	begin, count, step []int
	squeeze            []bool
}

func (c *call) sliceSpec(x *Tensor) (*sliceSpec, error) {
	r := x.Rank()
	begin, err := c.ints("begin")
	if err != nil {
		return nil, err
	}
	end, err := c.ints("end")
	if err != nil {
		return nil, err
	}
	if len(begin) != r || len(end) != r {
		return nil, fmt.Errorf("begin %v / end %v need %d values", begin, end, r)
	}
	stride, err := c.ints("stride")
	if err != nil {
		return nil, err
	}
	if stride != nil && len(stride) != r {
		return nil, fmt.Errorf("stride %v needs %d values", stride, r)
	}
	bm, err := c.bools("begin_mask", r)
	if err != nil {
		return nil, err
	}
	em, err := c.bools("end_mask", r)
	if err != nil {
		return nil, err
	}
	sm, err := c.bools("squeeze_mask", r)
	if err != nil {
		return nil, err
	}
	sp := &sliceSpec{begin: make([]int, r), count: make([]int, r), step: make([]int, r), squeeze: make([]bool, r)}
	for i := 0; i < r; i++ {
		d := x.Shape[i]
		st := 1
		if stride != nil {
			st = stride[i]
		}
		if st == 0 {
			return nil, fmt.Errorf("stride 0 on axis %d", i)
		}
		sp.step[i] = st
		if sm != nil && sm[i] {
			b := begin[i]
			if b < 0 {
				b += d
			}
			if b < 0 || b >= d {
				return nil, fmt.Errorf("squeezed index %d out of range for axis %d of size %d", begin[i], i, d)
			}
			sp.begin[i], sp.count[i], sp.squeeze[i] = b, 1, true
			continue
		}
		b, e := begin[i], end[i]
		lo, hi := 0, d
		if st < 0 {
			lo, hi = -1, d-1
		}
		clampIdx := func(v int) int {
			if v < 0 {
				v += d
			}
			return min(max(v, lo), hi)
		}
		if bm != nil && bm[i] {
			b = 0
			if st < 0 {
				b = d - 1
			}
		} else {
			b = clampIdx(b)
		}
		if em != nil && em[i] {
			e = d
			if st < 0 {
				e = -1
			}
		} else {
			e = clampIdx(e)
		}
		n := 0
		if st > 0 && e > b {
			n = (e - b + st - 1) / st
		} else if st < 0 && b > e {
			n = (b - e - st - 1) / -st
		}
		sp.begin[i], sp.count[i] = b, n
	}
	return sp, nil
}

// layout returns the offset and strides in x of the slice, and the shapes
// with and without squeezed axes.
func (sp *sliceSpec) layout(x *Tensor) (off int, st, full, out []int) {
	xs := strides(x.Shape)
	st = make([]int, len(xs))
	for i := range xs {
		off += sp.begin[i] * xs[i]
		st[i] = xs[i] * sp.step[i]
		full = append(full, sp.count[i])
		if !sp.squeeze[i] {
			out = append(out, sp.count[i])
		}
	}
	if out == nil {
		out = []int{}
	}
	return off, st, full, out
}

func opSliceByIndex(c *call) error {
	x, err := c.need("x")
	if err != nil {
		return err
	}
	sp, err := c.sliceSpec(x)
	if err != nil {
		return err
	}
	off, st, full, shape := sp.layout(x)
	out := c.newOut(0, x.DType, shape)
	switch {
	case x.half != nil && x.F == nil:
		halfStridedCopy(out.F, x.half, full, off, st)
	case out.F != nil:
		stridedCopy(out.F, x.F, full, off, st)
	default:
		stridedCopy(out.I, x.I, full, off, st)
	}
	return nil
}

func opSliceBySize(c *call) error {
	x, err := c.need("x")
	if err != nil {
		return err
	}
	begin, err := c.ints("begin")
	if err != nil {
		return err
	}
	size, err := c.ints("size")
	if err != nil {
		return err
	}
	r := x.Rank()
	if len(begin) != r || len(size) != r {
		return fmt.Errorf("begin %v / size %v need %d values", begin, size, r)
	}
	xs := strides(x.Shape)
	shape := make([]int, r)
	off := 0
	for i := range shape {
		b := begin[i]
		if b < 0 {
			b += x.Shape[i]
		}
		s := size[i]
		if s < 0 {
			s = x.Shape[i] - b
		}
		if b < 0 || s < 0 || b+s > x.Shape[i] {
			return fmt.Errorf("slice begin %v size %v out of range for %v", begin, size, x.Shape)
		}
		shape[i] = s
		off += b * xs[i]
	}
	out := c.newOut(0, x.DType, shape)
	copyStrided(out, x, off, xs)
	return nil
}

func opSliceUpdate(c *call) error {
	x, err := c.need("x")
	if err != nil {
		return err
	}
	u, err := c.need("update")
	if err != nil {
		return err
	}
	if u.DType != x.DType {
		return fmt.Errorf("update is %s, x is %s", u.DType, x.DType)
	}
	sp, err := c.sliceSpec(x)
	if err != nil {
		return err
	}
	off, st, full, shape := sp.layout(x)
	if !equalInts(shape, u.Shape) && !equalInts(full, u.Shape) {
		return fmt.Errorf("update %v does not fit the slice %v", u.Shape, shape)
	}
	var out *Tensor
	if c.n.inplace {
		out = view(x, cloneInts(x.Shape))
		c.set(0, out)
	} else {
		out = c.newOut(0, x.DType, cloneInts(x.Shape))
		storeState(out, x)
	}
	switch { // u is never half bits: Predict widens a state passed as update
	case out.half != nil && out.F == nil:
		halfStridedScatter(out.half, u.F, full, off, st)
	case out.F != nil:
		stridedScatter(out.F, u.F, full, off, st)
	default:
		stridedScatter(out.I, u.I, full, off, st)
	}
	return nil
}

func opGather(c *call) error {
	x, err := c.need("x")
	if err != nil {
		return err
	}
	idx, err := c.need("indices")
	if err != nil {
		return err
	}
	if idx.IsFloat() || idx.DType == mil.Bool {
		return fmt.Errorf("indices are %s, want integers", idx.DType)
	}
	axis, err := c.intOr("axis", 0)
	if err != nil {
		return err
	}
	bd, err := c.intOr("batch_dims", 0)
	if err != nil {
		return err
	}
	if bd != 0 {
		return fmt.Errorf("batch_dims %d: %w", bd, ErrUnsupported)
	}
	a, err := mil.NormAxis(int64(axis), x.Rank())
	if err != nil {
		return err
	}
	shape := append(append(cloneInts(x.Shape[:a]), idx.Shape...), x.Shape[a+1:]...)
	out := c.newOut(0, x.DType, shape)
	outer := numel(x.Shape[:a])
	inner := numel(x.Shape[a+1:])
	d := x.Shape[a]
	o := 0
	for k := 0; k < outer; k++ {
		for _, j := range idx.I {
			if j < 0 || int(j) >= d {
				return fmt.Errorf("index %d out of range [0, %d) on axis %d", j, d, a)
			}
			s := (k*d + int(j)) * inner
			if x.half != nil {
				halfToFloat(out.F[o:o+inner], x.half[s:s+inner])
			} else if x.lut != nil {
				x.lut.widen(out.F[o:o+inner], s)
			} else if out.F != nil {
				copy(out.F[o:o+inner], x.F[s:s+inner])
			} else {
				copy(out.I[o:o+inner], x.I[s:s+inner])
			}
			o += inner
		}
	}
	return nil
}

func opGatherAlongAxis(c *call) error {
	x, err := c.need("x")
	if err != nil {
		return err
	}
	idx, err := c.need("indices")
	if err != nil {
		return err
	}
	if idx.IsFloat() || idx.DType == mil.Bool {
		return fmt.Errorf("indices are %s, want integers", idx.DType)
	}
	axis, err := c.intOr("axis", 0)
	if err != nil {
		return err
	}
	r := x.Rank()
	a, err := mil.NormAxis(int64(axis), r)
	if err != nil {
		return err
	}
	if idx.Rank() != r {
		return fmt.Errorf("indices rank %d != x rank %d", idx.Rank(), r)
	}
	for i := range idx.Shape {
		if i != a && idx.Shape[i] != x.Shape[i] {
			return fmt.Errorf("indices %v do not fit x %v off axis %d", idx.Shape, x.Shape, a)
		}
	}
	out := c.newOut(0, x.DType, cloneInts(idx.Shape))
	xs := strides(x.Shape)
	ms := make([]int, r) // x strides with the axis zeroed: base offset of an index position
	copy(ms, xs)
	ms[a] = 0
	d := x.Shape[a]
	var ferr error
	walk(idx.Shape, 0, ms, func(o, s, n, inner int) {
		for j := 0; j < n; j++ {
			k := idx.I[o+j]
			if k < 0 || int(k) >= d {
				ferr = fmt.Errorf("index %d out of range [0, %d) on axis %d", k, d, a)
				return
			}
			p := s + j*inner + int(k)*xs[a]
			if out.F != nil {
				out.F[o+j] = x.F[p]
			} else {
				out.I[o+j] = x.I[p]
			}
		}
	})
	return ferr
}

func registerShape() {
	kernels["transpose"] = opTranspose
	kernels["reshape"] = opReshape
	kernels["expand_dims"] = opExpandDims
	kernels["squeeze"] = opSqueeze
	kernels["tile"] = opTile
	kernels["concat"] = opConcat
	kernels["split"] = opSplit
	kernels["slice_by_index"] = opSliceByIndex
	kernels["slice_by_size"] = opSliceBySize
	kernels["slice_update"] = opSliceUpdate
	kernels["gather"] = opGather
	kernels["gather_along_axis"] = opGatherAlongAxis
}
