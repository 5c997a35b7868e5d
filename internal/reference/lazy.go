package reference

import (
	"fmt"

	"github.com/anemll/anemll/internal/hf"
)

// RowWeights are Weights that the lazy mode reads without whole-tensor
// copies: shapes without reading, and rows of axis 0 decoded straight
// into the reference's own reused buffers (CheckpointWeights from the
// memory-mapped file; verify's package weights from the packages). The
// values must equal those Tensor returns, bit for bit.
type RowWeights interface {
	Weights
	// Shape returns name's shape, or false when there is no such tensor.
	Shape(name string) ([]int64, bool)
	// ReadRows decodes rows [row0, row1) of axis 0 of name into dst,
	// which holds exactly those rows.
	ReadRows(name string, row0, row1 int, dst []float32) error
}

// releaser is the optional Release of RowWeights: called after each layer,
// the embedding rows and each LM-head block, it lets go of what reading
// them left resident (the checkpoint's mapped pages, a cached tensor).
type releaser interface{ Release() }

// decodeBlockBytes is how much of a mapped tensor is decoded before its
// pages are released.
const decodeBlockBytes = 4 << 20

// headBlockBytes bounds the float32 LM-head rows held at once in lazy mode.
const headBlockBytes = 16 << 20

// Shape implements RowWeights.
func (w ckWeights) Shape(name string) ([]int64, bool) {
	info, ok := w.c.Info(name)
	return info.Shape, ok
}

// ReadRows implements RowWeights: block by block, dropping each block's
// mapped pages after.
func (w ckWeights) ReadRows(name string, row0, row1 int, dst []float32) error {
	info, ok := w.c.Info(name)
	if !ok {
		return fmt.Errorf("reference: tensor %q not in checkpoint %s", name, w.c.Dir)
	}
	raw, err := w.c.Raw(name)
	if err != nil {
		return fmt.Errorf("reference: %w", err)
	}
	rows := int64(1)
	if len(info.Shape) > 0 {
		rows = info.Shape[0]
	}
	per := info.NumElements() / max(rows, 1)
	if row0 < 0 || int64(row1) > rows || row0 > row1 || int64(len(dst)) != int64(row1-row0)*per {
		return fmt.Errorf("reference: tensor %q: rows [%d,%d) into %d values, shape %v", name, row0, row1, len(dst), info.Shape)
	}
	sz := info.DType.Size()
	if sz == 0 {
		return fmt.Errorf("reference: tensor %q: invalid dtype %v", name, info.DType)
	}
	step := max(1, decodeBlockBytes/(per*sz))
	for b0 := int64(row0); b0 < int64(row1); b0 += step {
		b1 := min(b0+step, int64(row1))
		src := raw[b0*per*sz : b1*per*sz]
		if err := hf.DecodeFloat32(dst[(b0-int64(row0))*per:(b1-int64(row0))*per], src, info.DType); err != nil {
			return fmt.Errorf("reference: tensor %q in %s: %w", name, info.File, err)
		}
		hf.DropPages(src)
	}
	return nil
}

// Release drops every mapped page of the checkpoint from the resident
// set. Dropping each block after decoding is not enough: the kernel maps
// pages around a faulting address (fault-around, large folios), so
// reading one tensor can map pages of neighbours already released.
func (w ckWeights) Release() {
	for _, n := range w.c.Names() {
		if raw, err := w.c.Raw(n); err == nil {
			hf.DropPages(raw)
		}
	}
}

// release lets go of the checkpoint pages a lazy read mapped.
func (m *Model) release() {
	if r, ok := m.w.(releaser); ok {
		r.Release()
	}
}

// checkShape checks name's shape through the row reader, without reading.
func (m *Model) checkShape(rr RowWeights, name string, shape []int) error {
	s, ok := rr.Shape(name)
	if !ok {
		return fmt.Errorf("reference: tensor %q not in the checkpoint", name)
	}
	good := len(s) == len(shape)
	for i := range shape {
		good = good && s[i] == int64(shape[i])
	}
	if !good {
		return fmt.Errorf("reference: tensor %q has shape %v, want %v", name, s, shape)
	}
	return nil
}

// checkLazy checks that every tensor a lazy model will read exists with its
// shape (without reading data when the weights can tell shapes).
func (m *Model) checkLazy() error {
	rr, _ := m.w.(RowWeights)
	check := func(name string, shape ...int) error {
		if rr == nil {
			_, err := m.tensor(name, shape...)
			return err
		}
		return m.checkShape(rr, name, shape)
	}
	for i := range m.layerCount() {
		var L layerWeights
		for _, r := range m.layerReqs(i, &L) {
			if err := check(r.name, r.shape...); err != nil {
				return err
			}
		}
	}
	if err := check(m.names.embed(), m.embedShape()...); err != nil {
		return err
	}
	if !m.tiedHead() {
		return check(m.headName(), m.embedShape()...)
	}
	return nil
}

// fetch returns tensor name with the given shape, decoded into buf's memory
// (grown if needed; owned reports that) when the weights can, else as
// Weights.Tensor returns it.
func (m *Model) fetch(name string, buf []float32, shape ...int) (d []float32, owned bool, err error) {
	rr, ok := m.w.(RowWeights)
	if !ok {
		d, err = m.tensor(name, shape...)
		return d, false, err
	}
	if err := m.checkShape(rr, name, shape); err != nil {
		return nil, false, err
	}
	n := 1
	for _, s := range shape {
		n *= s
	}
	if cap(buf) < n {
		buf = make([]float32, n)
	}
	buf = buf[:n]
	if err := rr.ReadRows(name, 0, shape[0], buf); err != nil {
		return nil, false, err
	}
	return buf, true, nil
}

// loadLayerInto reads decoder layer i into L, reusing L's memory.
func (m *Model) loadLayerInto(i int, L *layerWeights) (*layerWeights, error) {
	for _, r := range m.layerReqs(i, L) {
		d, owned, err := m.fetch(r.name, *r.dst, r.shape...)
		if err != nil {
			return nil, err
		}
		if r.gain {
			d = m.toGain(d, owned)
		}
		*r.dst = d
	}
	m.release()
	return L, nil
}

// headSource is the tensor the LM head's rows come from.
func (m *Model) headSource() string {
	if m.tiedHead() {
		return m.names.embed()
	}
	return m.headName()
}

// lazyEmbed reads the embedding rows of ids into x.
func (m *Model) lazyEmbed(x [][]float32, ids []int) error {
	if rr, ok := m.w.(RowWeights); ok {
		for t, id := range ids {
			if err := rr.ReadRows(m.names.embed(), id, id+1, x[t]); err != nil {
				return err
			}
		}
		m.release()
		return nil
	}
	emb, err := m.tensor(m.names.embed(), m.embedShape()...)
	if err != nil {
		return err
	}
	h := m.hidden
	for t, id := range ids {
		copy(x[t], emb[id*h:(id+1)*h])
	}
	return nil
}

// lazyHead applies the LM head block of rows by block.
func (m *Model) lazyHead(logits, hn [][]float32) error {
	name := m.headSource()
	rr, ok := m.w.(RowWeights)
	if !ok {
		w, err := m.tensor(name, m.embedShape()...)
		if err != nil {
			return err
		}
		l := linear{w: w, out: m.vocab, in: m.hidden}
		l.applyRows(logits, widenRows(nil, hn))
		return nil
	}
	xw := widenRows(nil, hn)
	step := max(1, headBlockBytes/(4*m.hidden))
	buf := make([]float32, min(step, m.vocab)*m.hidden)
	sub := make([][]float32, len(hn))
	for r0 := 0; r0 < m.vocab; r0 += step {
		r1 := min(r0+step, m.vocab)
		w := buf[:(r1-r0)*m.hidden]
		if err := rr.ReadRows(name, r0, r1, w); err != nil {
			return err
		}
		l := linear{w: w, out: r1 - r0, in: m.hidden}
		for t := range hn {
			sub[t] = logits[t][r0:r1]
		}
		l.applyRows(sub, xw)
		m.release()
	}
	return nil
}
