package runtime

import (
	"encoding/binary"
	"fmt"

	"github.com/anemll/anemll/internal/bitpack"
	"github.com/anemll/anemll/internal/fp16"
	"github.com/anemll/anemll/internal/mil"
)

// lutOp prepares an iOS18 constexpr_lut_to_dense op at load time, once
// per (indices, lut, vector_axis) across all functions of a model. An
// fp16-palette weight becomes a pending constant (see materialize): kept
// as packed indices and palettes when every use can read that form,
// dequantized otherwise.
//
// indices is uint{b} with shape [d_0..d_{K-1}], lut has shape [g_0..g_{K-1},
// 2^b, V]; element p uses table lut[p_0/(d_0/g_0), …] and entry indices[p],
// whose V values land at consecutive positions along vector_axis.
func (l *loader) lutOp(op *mil.Op) (*Tensor, error) {
	arg := func(p string) (*mil.Value, error) {
		a := op.Input(p)
		if len(a) != 1 {
			return nil, fmt.Errorf("needs one %q binding", p)
		}
		return l.constValue(a[0])
	}
	iv, err := arg("indices")
	if err != nil {
		return nil, err
	}
	lv, err := arg("lut")
	if err != nil {
		return nil, err
	}
	vectorAxis := -1
	hasAxis := len(op.Input("vector_axis")) > 0
	if hasAxis {
		av, err := arg("vector_axis")
		if err != nil {
			return nil, err
		}
		ints, err := av.Ints()
		if err != nil || len(ints) != 1 {
			return nil, fmt.Errorf("vector_axis must be an integer scalar")
		}
		vectorAxis = int(ints[0])
	}
	key := lutKey{indices: iv, lut: lv, axis: vectorAxis, hasAxis: hasAxis}
	if t, ok := l.cache.luts[key]; ok {
		return t, nil
	}
	s, err := parseLUT(iv, lv, vectorAxis, hasAxis)
	if err != nil {
		return nil, err
	}
	var t *Tensor
	if s.lut.DType == mil.Float16 {
		t = &Tensor{DType: mil.Float16, Shape: s.outShape, pending: &pendingConst{name: op.Name, lut: s}}
	} else if t, err = s.dense(); err != nil {
		return nil, err
	}
	l.cache.luts[key] = t
	return t, nil
}

// lutSpec is a checked constexpr_lut_to_dense: its unpacked shape, table
// layout, palettes and bit-packed indices.
type lutSpec struct {
	bits     int
	dims     []int // indices shape
	groups   []int // tables per dimension
	vs       int   // vector size V
	axis     int   // vector axis (normalized)
	outShape []int
	lut      *Tensor // [g_0..g_{K-1}, 2^b, V]
	raw      []byte  // indices, bit-packed LSB-first
}

// dequantLUT dequantizes a constexpr_lut_to_dense into a dense tensor.
func dequantLUT(iv, lv *mil.Value, vectorAxis int, hasAxis bool) (*Tensor, error) {
	s, err := parseLUT(iv, lv, vectorAxis, hasAxis)
	if err != nil {
		return nil, err
	}
	return s.dense()
}

func parseLUT(iv, lv *mil.Value, vectorAxis int, hasAxis bool) (*lutSpec, error) {
	it, lt := iv.Type, lv.Type
	if it.Kind != mil.KindTensor || !it.Static() || lt.Kind != mil.KindTensor || !lt.Static() {
		return nil, fmt.Errorf("indices %s and lut %s must be fixed-shape tensors", it, lt)
	}
	bits := it.DType.Bits()
	switch it.DType {
	case mil.UInt1, mil.UInt2, mil.UInt3, mil.UInt4, mil.UInt6, mil.UInt8:
	default:
		return nil, fmt.Errorf("indices dtype %s, want uint1..uint8: %w", it.DType, ErrUnsupported)
	}
	k := len(it.Shape)
	if len(lt.Shape) != k+2 {
		return nil, fmt.Errorf("lut rank %d must be indices rank %d + 2", len(lt.Shape), k)
	}
	if lt.Shape[k] != int64(1)<<bits {
		return nil, fmt.Errorf("lut has %d entries per table, %s indices need %d", lt.Shape[k], it.DType, 1<<bits)
	}
	s := &lutSpec{bits: bits, dims: toInts(it.Shape), groups: toInts(lt.Shape[:k]), vs: int(lt.Shape[k+1])}
	for i := range s.dims {
		if s.groups[i] <= 0 || s.dims[i]%s.groups[i] != 0 {
			return nil, fmt.Errorf("indices dim %d (%d) is not divisible by lut dim %d", i, s.dims[i], s.groups[i])
		}
	}
	lut, err := decodeValue(lv)
	if err != nil {
		return nil, fmt.Errorf("lut: %w", err)
	}
	if !lut.IsFloat() && lut.DType != mil.Int8 && lut.DType != mil.UInt8 {
		return nil, fmt.Errorf("lut dtype %s: %w", lut.DType, ErrUnsupported)
	}
	s.lut = lut
	raw, err := iv.Bytes()
	if err != nil {
		return nil, fmt.Errorf("indices: %w", err)
	}
	n := numel(s.dims)
	if need := bitpack.PackedLen(n, bits); len(raw) < need {
		return nil, fmt.Errorf("indices: %d %d-bit elements need %d bytes, have %d", n, bits, need, len(raw))
	}
	s.raw = raw
	s.outShape = cloneInts(s.dims)
	s.axis = k - 1
	if s.vs > 1 {
		if !hasAxis {
			return nil, fmt.Errorf("vector_axis is required when the vector size is %d", s.vs)
		}
		if s.axis, err = mil.NormAxis(int64(vectorAxis), k); err != nil {
			return nil, err
		}
		s.outShape[s.axis] *= s.vs
	}
	return s, nil
}

// dense dequantizes s into a tensor of the palette's dtype.
func (s *lutSpec) dense() (*Tensor, error) {
	dims, groups, vs, axis, bits := s.dims, s.groups, s.vs, s.axis, s.bits
	k := len(dims)
	n := numel(dims)
	idx, err := bitpack.Unpack(make([]uint8, 0, n), s.raw, n, bits)
	if err != nil {
		return nil, fmt.Errorf("indices: %w", err)
	}
	bs := make([]int, k)
	for i := range dims {
		bs[i] = dims[i] / groups[i]
	}
	lut := s.lut
	out := Zeros(lut.DType, s.outShape)
	if n == 0 {
		return out, nil
	}
	gs := strides(groups)
	os := strides(s.outShape)
	entry := (1 << bits) * vs
	// Odometer over index positions p, tracking the table offset and the
	// output offset incrementally.
	p := make([]int, k)
	table, o := 0, 0
	for e := 0; e < n; e++ {
		src := table*entry + int(idx[e])*vs
		for v := 0; v < vs; v++ {
			if out.F != nil {
				out.F[o+v*os[axis]] = lut.F[src+v]
			} else {
				out.I[o+v*os[axis]] = lut.I[src+v]
			}
		}
		for a := k - 1; a >= 0; a-- {
			p[a]++
			step := os[a]
			if a == axis {
				step *= vs
			}
			o += step
			if p[a]%bs[a] == 0 {
				table += gs[a]
			}
			if p[a] < dims[a] {
				break
			}
			o -= step * dims[a]
			table -= gs[a] * groups[a]
			p[a] = 0
		}
	}
	return out, nil
}

// lutWeight is a palettized fp16 weight kept as the package stores it:
// bit-packed indices, row-major, and one palette per block of rows (the
// per-grouped-channel layout ANEMLL writes). Row r of the rows×k matrix
// (rows = the first dimension) uses table r/rowsPerTable.
type lutWeight struct {
	bits, rows, k, rowsPerTable int
	packed                      []byte
	table                       []float32 // tables × 2^bits fp16 values
	// bytes4 holds, for 4-bit indices, each table's fp16 values as 16 low
	// bytes then 16 high bytes (for lut4ToFloatSIMD).
	bytes4 [][32]byte
	// bytes6 is the same for 6-bit indices: 64 low bytes then 64 high
	// bytes per table (for lut6ToFloatSIMD).
	bytes6 [][128]byte
}

// lut6Consts are lut6ToFloatSIMD's constants: a PSHUFB pattern putting
// bytes 3j..3j+2 in dword j (top byte zero), then four dword masks.
var lut6Consts = func() (k [80]byte) {
	for j := 0; j < 4; j++ {
		k[4*j], k[4*j+1], k[4*j+2], k[4*j+3] = byte(3*j), byte(3*j+1), byte(3*j+2), 0x80
	}
	for m := 0; m < 4; m++ {
		for j := 0; j < 4; j++ {
			k[16+16*m+4*j+m] = 0x3f
		}
	}
	return k
}()

// weight returns s in lutWeight form, or nil when its layout does not fit
// (vectors, tables along other dimensions, or no dimensions).
func (s *lutSpec) weight() *lutWeight {
	if s.vs != 1 || len(s.dims) == 0 || s.lut.DType != mil.Float16 {
		return nil
	}
	for _, g := range s.groups[1:] {
		if g != 1 {
			return nil
		}
	}
	rows := s.dims[0]
	n := numel(s.dims)
	w := &lutWeight{bits: s.bits, rows: rows, rowsPerTable: rows / s.groups[0], packed: s.raw[:bitpack.PackedLen(n, s.bits)], table: s.lut.F}
	if rows > 0 {
		w.k = n / rows
	}
	switch w.bits {
	case 4:
		w.bytes4 = make([][32]byte, len(w.table)/16)
		for i, v := range w.table {
			h := fp16.FromFloat32(v) // exact: palettes are halves
			w.bytes4[i/16][i%16], w.bytes4[i/16][16+i%16] = byte(h), byte(h>>8)
		}
	case 6:
		w.bytes6 = make([][128]byte, len(w.table)/64)
		for i, v := range w.table {
			h := fp16.FromFloat32(v)
			w.bytes6[i/64][i%64], w.bytes6[i/64][64+i%64] = byte(h), byte(h>>8)
		}
	}
	return w
}

// widen sets dst[i] to element e0+i of the weight (row-major), for
// i < len(dst).
func (w *lutWeight) widen(dst []float32, e0 int) {
	nt := 1 << w.bits
	for len(dst) > 0 {
		r, c := e0/w.k, e0%w.k
		seg := min(len(dst), w.k-c)
		t := r / w.rowsPerTable
		if w.bits == 4 && useSIMD && haveHalfSIMD && w.bytes4 != nil {
			w.widen4(dst[:seg], e0, t)
		} else if w.bits == 6 && useSIMD && haveHalfSIMD && w.bytes6 != nil {
			w.widen6(dst[:seg], e0, t)
		} else {
			w.widenRun(dst[:seg], e0, w.table[t*nt:(t+1)*nt])
		}
		dst, e0 = dst[seg:], e0+seg
	}
}

// fuseLUT enables the fused LUT matrix-vector kernels (dot4x1L4SIMD,
// lut6DotRowSIMD); benchmarks compare them with decoding rows first.
var fuseLUT = true

// fused4 reports whether rows r..r+3 can go through dot4x1L4SIMD: 4-bit
// indices, SIMD kernels, rows starting on byte boundaries, one palette.
func (w *lutWeight) fused4(r int) bool {
	return fuseLUT && w.bits == 4 && useSIMD && haveHalfSIMD && w.k%2 == 0 && w.k >= 8 &&
		r/w.rowsPerTable == (r+3)/w.rowsPerTable
}

// dot4x1 returns the dot products of rows r..r+3 with b (len k) in
// dot4x1H's order; fused4(r) must hold.
func (w *lutWeight) dot4x1(r int, b []float32) [4]float32 {
	k := w.k
	t := r / w.rowsPerTable
	tab := (*[16]float32)(w.table[t*16 : (t+1)*16])
	row := func(i int) []byte { return w.packed[(r+i)*k/2 : (r+i+1)*k/2] }
	a0, a1, a2, a3 := row(0), row(1), row(2), row(3)
	var s [4]float32
	k8 := k &^ 7
	dot4x1L4SIMD(&a0[0], &a1[0], &a2[0], &a3[0], &b[0], k8, &s, &w.bytes4[t])
	nib := func(a []byte, p int) float32 { return tab[a[p/2]>>(4*(p&1))&15] }
	for p := k8; p < k; p++ {
		y := b[p]
		s[0] += nib(a0, p) * y
		s[1] += nib(a1, p) * y
		s[2] += nib(a2, p) * y
		s[3] += nib(a3, p) * y
	}
	return s
}

// fused6 reports whether rows r..r+3 can go through lut6DotRowSIMD: 6-bit
// indices, SIMD kernels, rows starting on byte boundaries, one palette,
// and 16 readable bytes past the last row's indices.
func (w *lutWeight) fused6(r int) bool {
	return fuseLUT && w.bits == 6 && useSIMD && haveHalfSIMD && w.k%4 == 0 && w.k >= 8 &&
		r/w.rowsPerTable == (r+3)/w.rowsPerTable && (r+4)*w.k*3/4+16 <= len(w.packed)
}

// dot4x1L6 is dot4x1 for 6-bit indices; fused6(r) must hold. Each row's
// lanes come from lut6DotRowSIMD and are summed as gemm's dot4x1SIMD sums them.
func (w *lutWeight) dot4x1L6(r int, b []float32) [4]float32 {
	k := w.k
	t := r / w.rowsPerTable
	tab := (*[64]float32)(w.table[t*64 : (t+1)*64])
	k8 := k &^ 7
	var s [4]float32
	for i := 0; i < 4; i++ {
		off := (r + i) * k * 3 / 4
		var l [8]float32
		lut6DotRowSIMD(&w.packed[off], &b[0], k8, &w.bytes6[t], &lut6Consts, &l)
		s[i] = ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]))
	}
	for p := k8; p < k; p++ {
		y := b[p]
		for i := 0; i < 4; i++ {
			e := (r+i)*k + p
			pos := uint(e) * 6
			v := uint(w.packed[pos>>3]) >> (pos & 7)
			if pos&7 > 2 {
				v |= uint(w.packed[pos>>3+1]) << (8 - pos&7)
			}
			s[i] += tab[v&63] * y
		}
	}
	return s
}

// widen4 is widenRun for 4-bit indices on the SIMD kernel, with table t.
func (w *lutWeight) widen4(dst []float32, e0, t int) {
	tab := w.table[t*16 : (t+1)*16]
	if e0&1 == 1 {
		w.widenRun(dst[:1], e0, tab)
		dst, e0 = dst[1:], e0+1
	}
	n := len(dst) &^ 15
	if n > 0 {
		_ = w.packed[(e0+n)/2-1]
		lut4ToFloatSIMD(&dst[0], &w.packed[e0/2], n, &w.bytes4[t])
	}
	if n < len(dst) {
		w.widenRun(dst[n:], e0+n, tab)
	}
}

// widen6 is widenRun for 6-bit indices on the SIMD kernel, with table t.
func (w *lutWeight) widen6(dst []float32, e0, t int) {
	tab := w.table[t*64 : (t+1)*64]
	if r := e0 % 4; r != 0 {
		h := min(4-r, len(dst))
		w.widenRun(dst[:h], e0, tab)
		dst, e0 = dst[h:], e0+h
	}
	// The kernel reads 16 bytes per 12 it decodes: stop while 4 spare
	// bytes remain in the packed indices.
	avail := (len(w.packed) - e0/4*3 - 4) / 12 * 16
	n := min(len(dst)&^15, max(avail, 0))
	if n > 0 {
		lut6ToFloatSIMD(&dst[0], &w.packed[e0/4*3], n, &w.bytes6[t], &lut6Consts)
	}
	if n < len(dst) {
		w.widenRun(dst[n:], e0+n, tab)
	}
}

// widenRun decodes elements e0.. into dst, all with palette tab.
func (w *lutWeight) widenRun(dst []float32, e0 int, tab []float32) {
	b := w.packed
	switch w.bits {
	case 8:
		tab := (*[256]float32)(tab)
		for i, x := range b[e0 : e0+len(dst)] {
			dst[i] = tab[x]
		}
		return
	case 4:
		tab := (*[16]float32)(tab)
		i := 0
		if e0&1 == 1 && len(dst) > 0 {
			dst[0] = tab[b[e0>>1]>>4]
			i, e0 = 1, e0+1
		}
		src := b[e0>>1:]
		pairs := (len(dst) - i) / 2
		src = src[:pairs+(len(dst)-i)%2]
		for j := 0; j < pairs; j++ {
			x := src[j]
			dst[i], dst[i+1] = tab[x&15], tab[x>>4]
			i += 2
		}
		if i < len(dst) {
			dst[i] = tab[src[pairs]&15]
		}
		return
	}
	i0 := 0
	if w.bits == 6 && e0%4 == 0 {
		// Four indices in every three bytes.
		tab := (*[64]float32)(tab)
		q := len(dst) / 4
		src := b[e0/4*3:]
		// Eight indices from each 8-byte load while 8 bytes remain.
		j := 0
		for ; j+2 <= q && 3*j+8 <= len(src); j += 2 {
			v := binary.LittleEndian.Uint64(src[3*j:])
			d := (*[8]float32)(dst[4*j:])
			d[0], d[1], d[2], d[3] = tab[v&63], tab[v>>6&63], tab[v>>12&63], tab[v>>18&63]
			d[4], d[5], d[6], d[7] = tab[v>>24&63], tab[v>>30&63], tab[v>>36&63], tab[v>>42&63]
		}
		src = src[:3*q]
		for ; j < q; j++ {
			v := uint32(src[3*j]) | uint32(src[3*j+1])<<8 | uint32(src[3*j+2])<<16
			d := (*[4]float32)(dst[4*j:])
			d[0], d[1], d[2], d[3] = tab[v&63], tab[v>>6&63], tab[v>>12&63], tab[v>>18&63]
		}
		i0 = 4 * q
	}
	mask := uint(1)<<w.bits - 1
	bits := uint(w.bits)
	for i := i0; i < len(dst); i++ {
		pos := uint(e0+i) * bits
		v := uint(b[pos>>3]) >> (pos & 7)
		if (pos&7)+bits > 8 {
			v |= uint(b[pos>>3+1]) << (8 - pos&7)
		}
		dst[i] = tab[v&mask]
	}
}
