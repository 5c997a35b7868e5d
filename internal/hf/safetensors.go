package hf

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/anemll/anemll/internal/fp16"
)

// File names of a Hugging Face checkpoint's weights.
const (
	SingleFile = "model.safetensors"
	IndexFile  = "model.safetensors.index.json"
)

// Checkpoint is a set of memory-mapped safetensors files: a single
// model.safetensors or the shards named by model.safetensors.index.json.
// Byte slices it returns stay valid until Close. Its methods other than
// Close may be called from several goroutines at once.
type Checkpoint struct {
	// Dir is the checkpoint directory.
	Dir      string
	files    []*mappedFile
	tensors  map[string]tensorRef
	names    []string
	metadata map[string]string
}

type mappedFile struct {
	path    string
	data    []byte
	release func() error
}

type tensorRef struct {
	info TensorInfo
	data []byte
}

// OpenCheckpoint opens the safetensors weights in dir. It prefers
// model.safetensors.index.json when present, else model.safetensors.
func OpenCheckpoint(dir string) (*Checkpoint, error) {
	c := &Checkpoint{Dir: dir, tensors: make(map[string]tensorRef)}
	indexPath := filepath.Join(dir, IndexFile)
	ib, err := os.ReadFile(indexPath)
	switch {
	case err == nil:
		if err := c.openIndex(indexPath, ib); err != nil {
			c.Close()
			return nil, err
		}
	case errors.Is(err, fs.ErrNotExist):
		path := filepath.Join(dir, SingleFile)
		if err := c.openFile(path, nil); err != nil {
			c.Close()
			return nil, err
		}
	default:
		return nil, fmt.Errorf("hf: open checkpoint: %w", err)
	}
	c.names = make([]string, 0, len(c.tensors))
	for n := range c.tensors {
		c.names = append(c.names, n)
	}
	sort.Strings(c.names)
	return c, nil
}

type indexJSON struct {
	Metadata  map[string]any    `json:"metadata"`
	WeightMap map[string]string `json:"weight_map"`
}

func (c *Checkpoint) openIndex(path string, b []byte) error {
	var idx indexJSON
	if err := json.Unmarshal(b, &idx); err != nil {
		return &FormatError{path, fmt.Sprintf("not a valid index: %v", err)}
	}
	if len(idx.WeightMap) == 0 {
		return &FormatError{path, "weight_map is empty"}
	}
	shards := make(map[string][]string)
	for name, shard := range idx.WeightMap {
		if shard == "" || shard != filepath.Base(shard) || shard == "." || shard == ".." || strings.ContainsAny(shard, `/\`) {
			return &FormatError{path, fmt.Sprintf("tensor %q: shard %q is not a plain file name", name, shard)}
		}
		shards[shard] = append(shards[shard], name)
	}
	files := make([]string, 0, len(shards))
	for s := range shards {
		files = append(files, s)
	}
	sort.Strings(files)
	for _, s := range files {
		want := shards[s]
		sort.Strings(want)
		if err := c.openFile(filepath.Join(c.Dir, s), want); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("hf: %s: shard %s named in the weight_map is missing: %w", path, s, err)
			}
			return err
		}
	}
	return nil
}

// openFile maps one safetensors file and registers its tensors. If want is
// non-nil, each named tensor must be present in the file.
func (c *Checkpoint) openFile(path string, want []string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("hf: open safetensors: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("hf: %s: %w", path, err)
	}
	size := st.Size()
	if size < 8 {
		return &FormatError{path, fmt.Sprintf("file is %d bytes, too short for a header", size)}
	}
	data, release, err := mapFile(f, size)
	if err != nil {
		return fmt.Errorf("hf: %s: %w", path, err)
	}
	c.files = append(c.files, &mappedFile{path: path, data: data, release: release})
	h, err := ParseFile(data, path)
	if err != nil {
		return err
	}
	for _, t := range h.Tensors {
		if prev, dup := c.tensors[t.Name]; dup {
			return &FormatError{path, fmt.Sprintf("tensor %q is also in %s", t.Name, prev.info.File)}
		}
		c.tensors[t.Name] = tensorRef{info: t, data: data[t.Offset : t.Offset+t.Size : t.Offset+t.Size]}
	}
	for _, name := range want {
		if _, ok := c.tensors[name]; !ok {
			return &FormatError{path, fmt.Sprintf("tensor %q named in the index is not in this shard", name)}
		}
	}
	if c.metadata == nil {
		c.metadata = h.Metadata
	}
	return nil
}

// Close unmaps all files. Slices returned by Raw become invalid.
func (c *Checkpoint) Close() error {
	var errs []error
	for _, f := range c.files {
		if err := f.release(); err != nil {
			errs = append(errs, fmt.Errorf("hf: unmap %s: %w", f.path, err))
		}
	}
	c.files = nil
	c.tensors = nil
	c.names = nil
	return errors.Join(errs...)
}

// Names returns the tensor names, sorted.
func (c *Checkpoint) Names() []string { return append([]string(nil), c.names...) }

// Metadata returns the __metadata__ map of the first file opened (may be nil).
func (c *Checkpoint) Metadata() map[string]string { return c.metadata }

// Info returns the description of the named tensor.
func (c *Checkpoint) Info(name string) (TensorInfo, bool) {
	t, ok := c.tensors[name]
	if !ok {
		return TensorInfo{}, false
	}
	t.info.Shape = append([]int64(nil), t.info.Shape...)
	return t.info, true
}

// Raw returns the tensor's little-endian bytes, without copying. The slice is
// read-only memory and is valid until Close.
func (c *Checkpoint) Raw(name string) ([]byte, error) {
	t, ok := c.tensors[name]
	if !ok {
		return nil, fmt.Errorf("hf: tensor %q not in checkpoint %s", name, c.Dir)
	}
	return t.data, nil
}

// Release lets the memory-mapped pages of a tensor leave the process's
// resident memory (the data stays readable: the kernel reads it again if
// it is touched). Converters call it after decoding a tensor so that peak
// memory stays near one tensor, not the whole checkpoint.
func (c *Checkpoint) Release(name string) {
	if t, ok := c.tensors[name]; ok {
		dropPages(t.data)
	}
}

// ReleaseRange is Release for bytes [off, off+n) of a tensor's data, so a
// large tensor can be let go of piece by piece while it is decoded.
func (c *Checkpoint) ReleaseRange(name string, off, n int64) {
	t, ok := c.tensors[name]
	if !ok || off < 0 || n <= 0 || off > int64(len(t.data)) {
		return
	}
	dropPages(t.data[off:min(off+n, int64(len(t.data)))])
}

// Float32 returns the tensor converted to float32. F32, F16 and BF16 convert
// exactly; other dtypes are refused.
func (c *Checkpoint) Float32(name string) ([]float32, error) {
	t, ok := c.tensors[name]
	if !ok {
		return nil, fmt.Errorf("hf: tensor %q not in checkpoint %s", name, c.Dir)
	}
	out := make([]float32, t.info.NumElements())
	if err := DecodeFloat32(out, t.data, t.info.DType); err != nil {
		return nil, fmt.Errorf("hf: tensor %q in %s: %w", name, t.info.File, err)
	}
	dropPages(t.data)
	return out, nil
}

// Float16 returns the tensor rounded to IEEE half (nearest, ties to even) as
// bit patterns, and how many finite values overflowed to ±Inf.
func (c *Checkpoint) Float16(name string) (data []uint16, overflow int, err error) {
	t, ok := c.tensors[name]
	if !ok {
		return nil, 0, fmt.Errorf("hf: tensor %q not in checkpoint %s", name, c.Dir)
	}
	out := make([]uint16, t.info.NumElements())
	overflow, err = DecodeFloat16(out, t.data, t.info.DType)
	if err != nil {
		return nil, 0, fmt.Errorf("hf: tensor %q in %s: %w", name, t.info.File, err)
	}
	dropPages(t.data)
	return out, overflow, nil
}

// DecodeFloat32 widens little-endian src of dtype dt into dst, which must
// hold len(src)/dt.Size() values.
func DecodeFloat32(dst []float32, src []byte, dt DType) error {
	sz := dt.Size()
	if sz == 0 || int64(len(src)) != int64(len(dst))*sz {
		return fmt.Errorf("hf: decode %s: %d bytes for %d values", dt, len(src), len(dst))
	}
	switch dt {
	case F32:
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i : 4*i+4]))
		}
	case BF16:
		src = src[:2*len(dst)]
		for i := range dst {
			dst[i] = math.Float32frombits(uint32(src[2*i])<<16 | uint32(src[2*i+1])<<24)
		}
	case F16:
		fp16.DecodeFloat32s(dst, src)
	default:
		return fmt.Errorf("hf: cannot convert %s to float32: %w", dt, ErrUnsupported)
	}
	return nil
}

// DecodeFloat16 rounds little-endian src of dtype dt to half bit patterns in
// dst and counts finite values that overflowed to ±Inf.
func DecodeFloat16(dst []uint16, src []byte, dt DType) (overflow int, err error) {
	sz := dt.Size()
	if sz == 0 || int64(len(src)) != int64(len(dst))*sz {
		return 0, fmt.Errorf("hf: decode %s: %d bytes for %d values", dt, len(src), len(dst))
	}
	half := func(f float32) uint16 {
		h := fp16.FromFloat32(f)
		if h.IsInf() && !math.IsInf(float64(f), 0) {
			overflow++
		}
		return uint16(h)
	}
	switch dt {
	case F16:
		for i := range dst {
			dst[i] = binary.LittleEndian.Uint16(src[2*i:])
		}
	case F32:
		for i := range dst {
			dst[i] = half(math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:])))
		}
	case BF16:
		for i := range dst {
			dst[i] = half(fp16.BF16ToFloat32(binary.LittleEndian.Uint16(src[2*i:])))
		}
	default:
		return 0, fmt.Errorf("hf: cannot convert %s to float16: %w", dt, ErrUnsupported)
	}
	return overflow, nil
}
