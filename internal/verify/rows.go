package verify

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/anemll/anemll/internal/bitpack"
	"github.com/anemll/anemll/internal/fp16"
	"github.com/anemll/anemll/internal/mil"
	"github.com/anemll/anemll/internal/reference"
)

// packageWeights is a reference.RowWeights: the lazy reference reads each
// weight's rows straight from the packages' bytes into its own reused
// buffers (LUT indices unpacked a block at a time), so a big model's LM
// head and embedding table are never held as float32. The values are
// those Tensor returns, bit for bit.
var _ reference.RowWeights = (*packageWeights)(nil)

// unpackBlock is how many LUT indices are unpacked at once.
const unpackBlock = 1 << 20

// rawCache holds the bytes of the last weight read, so that reading one
// tensor's rows block by block (the LM head, the embedding rows of each
// token) reads its bytes from the package once.
type rawCache struct {
	op   *mil.Op
	data []byte    // the const's bytes, or the LUT op's packed indices
	lut  []float32 // the LUT op's palettes
}

// bytesOf returns op's bytes (and palettes), reading them when op is not
// the cached one.
func (pw *packageWeights) bytesOf(op *mil.Op) (*rawCache, error) {
	if pw.cache.op == op {
		return &pw.cache, nil
	}
	pw.cache = rawCache{}
	c := rawCache{op: op}
	var err error
	if op.Type == "const" {
		v := op.ConstValue()
		if v == nil {
			return nil, fmt.Errorf("%s holds no value", op.Name)
		}
		if c.data, err = v.Bytes(); err != nil {
			return nil, err
		}
		if err := v.CheckSize(c.data); err != nil {
			return nil, err
		}
	} else {
		idxV, lutV, err := lutArgs(op)
		if err != nil {
			return nil, err
		}
		bits := idxV.Type.DType.Bits()
		if idxV.Type.DType.IsFloat() || bits < 1 || bits > 8 {
			return nil, fmt.Errorf("LUT indices of type %s", idxV.Type.DType)
		}
		if c.data, err = idxV.Bytes(); err != nil {
			return nil, err
		}
		if need := bitpack.PackedLen(int(idxV.Type.NumElements()), bits); len(c.data) < need {
			return nil, fmt.Errorf("%s: %d bytes of LUT indices, want %d", op.Name, len(c.data), need)
		}
		if c.lut, err = lutV.Floats(); err != nil {
			return nil, err
		}
	}
	pw.cache = c
	return &pw.cache, nil
}

// lutArgs returns a constexpr_lut_to_dense op's indices and lut literals.
func lutArgs(op *mil.Op) (idx, lut *mil.Value, err error) {
	arg := func(p string) (*mil.Value, error) {
		a := op.Input(p)
		if len(a) != 1 || a[0].Value == nil {
			return nil, fmt.Errorf("%s input %q is not a literal", op.Name, p)
		}
		return a[0].Value, nil
	}
	if idx, err = arg("indices"); err != nil {
		return nil, nil, err
	}
	if lut, err = arg("lut"); err != nil {
		return nil, nil, err
	}
	return idx, lut, nil
}

// decodeRows decodes rows [r0, r1) of axis 0 of op's value into dst.
func (pw *packageWeights) decodeRows(op *mil.Op, r0, r1 int, dst []float32) error {
	shape := op.Outputs[0].Type.Shape
	n := op.Outputs[0].Type.NumElements()
	per := n / max(shape[0], 1)
	if r0 < 0 || r0 > r1 || int64(r1) > shape[0] || int64(len(dst)) != int64(r1-r0)*per {
		return fmt.Errorf("rows [%d,%d) into %d values, shape %v", r0, r1, len(dst), shape)
	}
	c, err := pw.bytesOf(op)
	if err != nil {
		return err
	}
	e0, e1 := int64(r0)*per, int64(r1)*per
	if op.Type == "const" {
		switch dt := op.Outputs[0].Type.DType; dt {
		case mil.Float16:
			fp16.DecodeFloat32s(dst, c.data[2*e0:2*e1])
		case mil.Float32:
			for i := range dst {
				dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(c.data[4*(e0+int64(i)):]))
			}
		default:
			f, err := op.ConstValue().Floats()
			if err != nil {
				return err
			}
			copy(dst, f[e0:e1])
		}
		return nil
	}
	idxV, lutV, _ := lutArgs(op)
	ishape, lshape := idxV.Type.Shape, lutV.Type.Shape
	return dequantizeRange(dst, c.data, idxV.Type.DType.Bits(), e0, ishape, c.lut, lshape)
}

// dequantizeRange is dequantize for elements [e0, e0+len(dst)) of the
// packed indices, unpacked a block at a time.
func dequantizeRange(dst []float32, packed []byte, bits int, e0 int64, ishape []int64, lut []float32, lshape []int64) error {
	k := len(ishape)
	if len(lshape) != k+2 || lshape[k+1] != 1 {
		return fmt.Errorf("lut shape %v does not fit indices %v (vector size 1 only)", lshape, ishape)
	}
	entries := lshape[k]
	bs := make([]int64, k)
	for i := range bs {
		if lshape[i] <= 0 || ishape[i]%lshape[i] != 0 {
			return fmt.Errorf("lut shape %v does not divide indices %v", lshape, ishape)
		}
		bs[i] = ishape[i] / lshape[i]
	}
	// rowTables: only axis 0 is grouped (per-grouped-channel palettes,
	// lut [rows/g, 1, …, entries, 1]), so each row of axis 0 reads one
	// table, picked once per row.
	rowTables := true
	for i := 1; i < k; i++ {
		rowTables = rowTables && lshape[i] == 1
	}
	inner := int64(1)
	for _, d := range ishape[1:] {
		inner *= d
	}
	// pos is element e0's multi-index.
	pos := make([]int64, k)
	for i, r := k-1, e0; i >= 0; i-- {
		pos[i] = r % ishape[i]
		r /= ishape[i]
	}
	var idx []uint8
	for done := int64(0); done < int64(len(dst)); {
		// Unpack from an element that starts a byte (every 8 elements do).
		e := e0 + done
		a := e &^ 7
		n := min(int64(len(dst))-done, unpackBlock)
		var err error
		if idx, err = bitpack.Unpack(idx[:0], packed[a*int64(bits)/8:], int(e+n-a), bits); err != nil {
			return err
		}
		out := dst[done : done+n]
		if rowTables {
			for j := int64(0); j < n; {
				row := (e + j) / inner
				m := min(n-j, (row+1)*inner-(e+j)) // elements left in this row
				table := lut[(row/bs[0])*entries : (row/bs[0]+1)*entries]
				for q, ix := range idx[e-a+j : e-a+j+m] {
					if int(ix) >= len(table) {
						return fmt.Errorf("index %d outside a %d-entry table", ix, entries)
					}
					out[j+int64(q)] = table[ix]
				}
				j += m
			}
			done += n
			continue
		}
		for j, ix := range idx[e-a:] {
			table := int64(0)
			for i := 0; i < k; i++ {
				table = table*lshape[i] + pos[i]/bs[i]
			}
			if int64(ix) >= entries {
				return fmt.Errorf("index %d outside a %d-entry table", ix, entries)
			}
			out[j] = lut[table*entries+int64(ix)]
			for i := k - 1; i >= 0; i-- {
				pos[i]++
				if pos[i] < ishape[i] {
					break
				}
				pos[i] = 0
			}
		}
		done += n
	}
	return nil
}

// weightShape is op's shape as Tensor reports it: conv weights
// [out, in, 1, 1] as [out, in].
func weightShape(op *mil.Op) []int64 {
	shape := op.Outputs[0].Type.Shape
	for len(shape) > 2 && shape[len(shape)-1] == 1 {
		shape = shape[:len(shape)-1]
	}
	return slices.Clone(shape)
}

// Shape implements reference.RowWeights.
func (pw *packageWeights) Shape(name string) ([]int64, bool) {
	if isHead(name) && pw.head != nil {
		emb, ok := pw.byKey["embed_tokens_weight"]
		if !ok || emb.Outputs[0].Type.Rank() != 2 {
			return nil, false
		}
		return slices.Clone(emb.Outputs[0].Type.Shape), true
	}
	if op, ok := pw.byKey[normKey(name)]; ok {
		return weightShape(op), true
	}
	if rw, ok := pw.base.(reference.RowWeights); ok {
		return rw.Shape(name)
	}
	_, s, err := pw.base.Tensor(name)
	return s, err == nil
}

// ReadRows implements reference.RowWeights.
func (pw *packageWeights) ReadRows(name string, r0, r1 int, dst []float32) error {
	if isHead(name) && pw.head != nil {
		if err := pw.headRows(r0, r1, dst); err != nil {
			return fmt.Errorf("verify: LM head: %w", err)
		}
		return nil
	}
	op, ok := pw.byKey[normKey(name)]
	if !ok {
		if rw, ok := pw.base.(reference.RowWeights); ok {
			return rw.ReadRows(name, r0, r1, dst)
		}
		d, s, err := pw.base.Tensor(name)
		if err != nil {
			return err
		}
		per := len(d) / max(int(s[0]), 1)
		if r0 < 0 || r0 > r1 || int64(r1) > s[0] || len(dst) != (r1-r0)*per {
			return fmt.Errorf("verify: tensor %q: rows [%d,%d) into %d values, shape %v", name, r0, r1, len(dst), s)
		}
		copy(dst, d[r0*per:r1*per])
		return nil
	}
	if err := pw.decodeRows(op, r0, r1, dst); err != nil {
		return fmt.Errorf("verify: %s: %w", op.Outputs[0].Name, err)
	}
	scale, plusOne := pw.transform(name)
	if scale != 1 || plusOne {
		for i, v := range dst {
			x := float64(v) / scale
			if plusOne {
				x--
			}
			dst[i] = float32(x)
		}
	}
	return nil
}

// transform says how a package weight is turned back into the
// checkpoint's: divided by the residual scale α (a residual branch stored
// times α) and, for Gemma's gains stored as 1 + w, minus one.
func (pw *packageWeights) transform(name string) (scale float64, plusOne bool) {
	scale = 1
	if pw.alpha > 0 && strings.Contains(name, "layers.") {
		for _, b := range pw.branch {
			if strings.HasSuffix(name, b) {
				scale = pw.alpha
			}
		}
	}
	return scale, pw.plusOne && strings.HasSuffix(name, "norm.weight")
}

// headRows decodes rows [r0, r1) of the LM head joined from its splits.
func (pw *packageWeights) headRows(r0, r1 int, dst []float32) error {
	shape, ok := pw.Shape("lm_head.weight")
	if !ok {
		return fmt.Errorf("the embeddings package holds no [vocab, hidden] table")
	}
	h := int(shape[1])
	if r0 < 0 || r0 > r1 || int64(r1) > shape[0] || len(dst) != (r1-r0)*h {
		return fmt.Errorf("rows [%d,%d) into %d values, shape %v", r0, r1, len(dst), shape)
	}
	base := 0 // first row of the split
	for _, op := range pw.head {
		s := op.Outputs[0].Type.Shape
		if len(s) < 2 || s[1] != shape[1] {
			return fmt.Errorf("split %v does not fit the embeddings %v", s, shape)
		}
		rows := int(s[0])
		a, b := max(r0, base), min(r1, base+rows)
		if a < b {
			if err := pw.decodeRows(op, a-base, b-base, dst[(a-r0)*h:(b-r0)*h]); err != nil {
				return err
			}
		}
		base += rows
	}
	if base < r1 {
		return fmt.Errorf("%d rows for a vocabulary of %d", base, shape[0])
	}
	return nil
}

// keepBytes is the largest cached weight Release keeps: the LM head's
// splits stay cached across its row blocks, a big fp16 embedding table
// is let go once its rows are read (before the first layer's buffer).
const keepBytes = 64 << 20

// Release implements the reference's optional Release: a large cached
// weight, and the checkpoint's pages when reads fell back to it.
func (pw *packageWeights) Release() {
	if len(pw.cache.data) > keepBytes {
		pw.cache = rawCache{}
	}
	if r, ok := pw.base.(interface{ Release() }); ok {
		r.Release()
	}
}
