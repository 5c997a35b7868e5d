package hf

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"path/filepath"
	"sort"
	"strconv"
)

// WriteTensor is a tensor to write: its description plus a function that
// streams exactly Size() little-endian bytes of data to w.
type WriteTensor struct {
	Name  string
	DType DType
	Shape []int64
	Data  func(w io.Writer) error
}

// Size returns the number of data bytes the tensor must produce, or an
// error if the shape is negative or overflows.
func (t WriteTensor) Size() (int64, error) {
	n := uint64(t.DType.Size())
	if n == 0 {
		return 0, fmt.Errorf("hf: tensor %q: invalid dtype %v", t.Name, t.DType)
	}
	for _, d := range t.Shape {
		if d < 0 {
			return 0, fmt.Errorf("hf: tensor %q: negative dimension in shape %v", t.Name, t.Shape)
		}
		hi, lo := bits.Mul64(n, uint64(d))
		if hi != 0 || lo > 1<<62 {
			return 0, fmt.Errorf("hf: tensor %q: shape %v is too large", t.Name, t.Shape)
		}
		n = lo
	}
	return int64(n), nil
}

// BytesTensor returns a WriteTensor whose data is b.
func BytesTensor(name string, dt DType, shape []int64, b []byte) WriteTensor {
	return WriteTensor{Name: name, DType: dt, Shape: shape, Data: func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	}}
}

// WriteSafetensors writes tensors (sorted by name) to a new safetensors file
// at path, streaming each tensor's data. On error the file is removed.
func WriteSafetensors(path string, tensors []WriteTensor) (err error) {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("hf: write safetensors: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("hf: write %s: %w", path, cerr)
		}
		if err != nil {
			os.Remove(path)
		}
	}()
	bw := bufio.NewWriterSize(f, 1<<20)
	if _, err := EncodeSafetensors(bw, tensors, map[string]string{"format": "pt"}); err != nil {
		return fmt.Errorf("hf: write %s: %w", path, err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("hf: write %s: %w", path, err)
	}
	return nil
}

// EncodeSafetensors streams a safetensors file to w: the 8-byte header
// length, the JSON header padded with spaces to a multiple of 8, then the
// tensors' data in name order. It returns the number of bytes written.
func EncodeSafetensors(w io.Writer, tensors []WriteTensor, metadata map[string]string) (int64, error) {
	ts := append([]WriteTensor(nil), tensors...)
	sort.Slice(ts, func(i, j int) bool { return ts[i].Name < ts[j].Name })
	sizes := make([]int64, len(ts))
	var hdr bytes.Buffer
	hdr.WriteByte('{')
	if len(metadata) > 0 {
		mb, err := json.Marshal(metadata) // map keys are sorted
		if err != nil {
			return 0, fmt.Errorf("hf: metadata: %w", err)
		}
		hdr.WriteString(`"__metadata__":`)
		hdr.Write(mb)
	}
	var off int64
	for i, t := range ts {
		if t.Name == "" || t.Name == "__metadata__" {
			return 0, fmt.Errorf("hf: invalid tensor name %q", t.Name)
		}
		if i > 0 && ts[i-1].Name == t.Name {
			return 0, fmt.Errorf("hf: tensor %q given twice", t.Name)
		}
		if t.Data == nil {
			return 0, fmt.Errorf("hf: tensor %q has no data function", t.Name)
		}
		n, err := t.Size()
		if err != nil {
			return 0, err
		}
		sizes[i] = n
		if hdr.Len() > 1 {
			hdr.WriteByte(',')
		}
		nb, _ := json.Marshal(t.Name)
		hdr.Write(nb)
		hdr.WriteString(`:{"dtype":"`)
		hdr.WriteString(t.DType.String())
		hdr.WriteString(`","shape":[`)
		for j, d := range t.Shape {
			if j > 0 {
				hdr.WriteByte(',')
			}
			hdr.WriteString(strconv.FormatInt(d, 10))
		}
		hdr.WriteString(`],"data_offsets":[`)
		hdr.WriteString(strconv.FormatInt(off, 10))
		hdr.WriteByte(',')
		off += n
		hdr.WriteString(strconv.FormatInt(off, 10))
		hdr.WriteString("]}")
	}
	hdr.WriteByte('}')
	for hdr.Len()%8 != 0 {
		hdr.WriteByte(' ')
	}
	var lenBuf [8]byte
	binary.LittleEndian.PutUint64(lenBuf[:], uint64(hdr.Len()))
	cw := &countWriter{w: w}
	cw.Write(lenBuf[:])
	cw.Write(hdr.Bytes())
	if cw.err != nil {
		return cw.n, cw.err
	}
	for i, t := range ts {
		lw := &limitWriter{w: cw, left: sizes[i]}
		if err := t.Data(lw); err != nil {
			return cw.n, fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		if lw.left != 0 {
			return cw.n, fmt.Errorf("tensor %q: data is %d bytes short of %d", t.Name, lw.left, sizes[i])
		}
	}
	return cw.n, cw.err
}

type countWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (c *countWriter) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.err = err
	return n, err
}

var errTooMuchData = errors.New("tensor data longer than its shape")

type limitWriter struct {
	w    io.Writer
	left int64
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > l.left {
		return 0, errTooMuchData
	}
	n, err := l.w.Write(p)
	l.left -= int64(n)
	return n, err
}

// ShardName returns the Hugging Face name of shard i (0-based) of n, e.g.
// "model-00001-of-00003.safetensors".
func ShardName(i, n int) string {
	return fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, n)
}

// WriteSharded writes tensors into dir as n shard files plus
// model.safetensors.index.json, splitting the name-sorted tensors into runs
// of roughly equal byte size. With n <= 1 it writes model.safetensors only.
func WriteSharded(dir string, tensors []WriteTensor, n int) error {
	if n <= 1 {
		return WriteSafetensors(filepath.Join(dir, SingleFile), tensors)
	}
	ts := append([]WriteTensor(nil), tensors...)
	sort.Slice(ts, func(i, j int) bool { return ts[i].Name < ts[j].Name })
	if n > len(ts) {
		return fmt.Errorf("hf: cannot split %d tensors into %d shards", len(ts), n)
	}
	var total int64
	sizes := make([]int64, len(ts))
	for i, t := range ts {
		s, err := t.Size()
		if err != nil {
			return err
		}
		sizes[i] = s
		total += s
	}
	weightMap := make(map[string]string, len(ts))
	start := 0
	var done int64
	for shard := 0; shard < n; shard++ {
		end := start + 1
		acc := done + sizes[start]
		// Extend while under this shard's share, leaving a tensor per later shard.
		for end < len(ts)-(n-shard-1) && (shard == n-1 || acc+sizes[end]/2 <= total*int64(shard+1)/int64(n)) {
			acc += sizes[end]
			end++
		}
		name := ShardName(shard, n)
		for _, t := range ts[start:end] {
			weightMap[t.Name] = name
		}
		if err := WriteSafetensors(filepath.Join(dir, name), ts[start:end]); err != nil {
			return err
		}
		done, start = acc, end
	}
	idx := struct {
		Metadata  map[string]int64  `json:"metadata"`
		WeightMap map[string]string `json:"weight_map"`
	}{map[string]int64{"total_size": total}, weightMap}
	b, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return fmt.Errorf("hf: index: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, IndexFile), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("hf: write index: %w", err)
	}
	return nil
}
