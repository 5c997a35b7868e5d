package runtime

import (
	"fmt"

	"github.com/anemll/anemll/internal/bitpack"
	"github.com/anemll/anemll/internal/mil"
)

// lutOp dequantizes an iOS18 constexpr_lut_to_dense op at load time,
// once per (indices, lut, vector_axis) across all functions of a model.
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
	t, err := dequantLUT(iv, lv, vectorAxis, hasAxis)
	if err != nil {
		return nil, err
	}
	l.cache.luts[key] = t
	return t, nil
}

func dequantLUT(iv, lv *mil.Value, vectorAxis int, hasAxis bool) (*Tensor, error) {
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
	dims := toInts(it.Shape)
	groups := toInts(lt.Shape[:k])
	vs := int(lt.Shape[k+1])
	bs := make([]int, k)
	for i := range dims {
		if groups[i] <= 0 || dims[i]%groups[i] != 0 {
			return nil, fmt.Errorf("indices dim %d (%d) is not divisible by lut dim %d", i, dims[i], groups[i])
		}
		bs[i] = dims[i] / groups[i]
	}
	lut, err := decodeValue(lv)
	if err != nil {
		return nil, fmt.Errorf("lut: %w", err)
	}
	if !lut.IsFloat() && lut.DType != mil.Int8 && lut.DType != mil.UInt8 {
		return nil, fmt.Errorf("lut dtype %s: %w", lut.DType, ErrUnsupported)
	}
	raw, err := iv.Bytes()
	if err != nil {
		return nil, fmt.Errorf("indices: %w", err)
	}
	n := numel(dims)
	idx, err := bitpack.Unpack(make([]uint8, 0, n), raw, n, bits)
	if err != nil {
		return nil, fmt.Errorf("indices: %w", err)
	}
	outShape := cloneInts(dims)
	axis := k - 1
	if vs > 1 {
		if !hasAxis {
			return nil, fmt.Errorf("vector_axis is required when the vector size is %d", vs)
		}
		if axis, err = mil.NormAxis(int64(vectorAxis), k); err != nil {
			return nil, err
		}
		outShape[axis] *= vs
	}
	out := Zeros(lut.DType, outShape)
	if n == 0 {
		return out, nil
	}
	gs := strides(groups)
	os := strides(outShape)
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
