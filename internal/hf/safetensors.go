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
	"runtime"
	"sort"
	"strings"
	"sync"

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
	Dir     string
	files   []*mappedFile
	tensors map[string]tensorRef
	names   []string
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
		if _, serr := os.Stat(path); errors.Is(serr, fs.ErrNotExist) {
			return nil, missingWeights(dir)
		}
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

// DropPages tells the kernel that the memory-mapped checkpoint bytes b (a
// slice of what Raw returned) are not needed now: their pages leave the
// process's resident set and are read again from the page cache if
// touched. It does nothing where files are read into memory.
func DropPages(b []byte) { dropPages(b) }

// Names returns the tensor names, sorted.
func (c *Checkpoint) Names() []string { return append([]string(nil), c.names...) }

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
	overflow, err = c.Float16Rows(name, 0, rowCount(t.info), out)
	if err != nil {
		return nil, 0, err
	}
	return out, overflow, nil
}

// float16BlockBytes is how many source bytes Float16Rows decodes before it
// lets their mapped pages go.
var float16BlockBytes int64 = 16 << 20

// Float16Rows rounds rows [row0, row1) along axis 0 of the tensor (a scalar
// counts as one row) to IEEE half bit patterns in dst, which must hold
// exactly those rows, and returns how many finite values overflowed to ±Inf.
// It decodes block by block and lets each block's mapped pages leave
// resident memory once decoded, so a large tensor is never resident twice.
func (c *Checkpoint) Float16Rows(name string, row0, row1 int64, dst []uint16) (overflow int, err error) {
	t, ok := c.tensors[name]
	if !ok {
		return 0, fmt.Errorf("hf: tensor %q not in checkpoint %s", name, c.Dir)
	}
	rows := rowCount(t.info)
	if row0 < 0 || row1 > rows || row0 > row1 {
		return 0, fmt.Errorf("hf: tensor %q: rows [%d,%d) outside shape %v", name, row0, row1, t.info.Shape)
	}
	per := int64(0)
	if rows > 0 {
		per = t.info.NumElements() / rows
	}
	if int64(len(dst)) != (row1-row0)*per {
		return 0, fmt.Errorf("hf: tensor %q: %d values for rows [%d,%d) of %d values each", name, len(dst), row0, row1, per)
	}
	switch t.info.DType {
	case F16, F32, BF16:
	default:
		return 0, fmt.Errorf("hf: tensor %q in %s: cannot convert %s to float16: %w", name, t.info.File, t.info.DType, ErrUnsupported)
	}
	sz := t.info.DType.Size()
	rowsPerBlock := max(1, float16BlockBytes/max(1, per*sz))
	for b0 := row0; b0 < row1; b0 += rowsPerBlock {
		b1 := min(b0+rowsPerBlock, row1)
		src := t.data[b0*per*sz : b1*per*sz]
		o, err := DecodeFloat16(dst[(b0-row0)*per:(b1-row0)*per], src, t.info.DType)
		if err != nil {
			return 0, fmt.Errorf("hf: tensor %q in %s: %w", name, t.info.File, err)
		}
		overflow += o
		dropPages(src)
	}
	return overflow, nil
}

// rowCount is the length of axis 0 (1 for a scalar).
func rowCount(t TensorInfo) int64 {
	if len(t.Shape) == 0 {
		return 1
	}
	return t.Shape[0]
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
		overflow = decodeBF16Parallel(dst, src)
	default:
		return 0, fmt.Errorf("hf: cannot convert %s to float16: %w", dt, ErrUnsupported)
	}
	return overflow, nil
}

// parallelDecodeMin is the value count from which a BF16 decode is split
// across GOMAXPROCS goroutines.
const parallelDecodeMin = 1 << 20

// decodeBF16Parallel decodes BF16 src into dst (len(src) = 2·len(dst)),
// splitting large inputs across cores, and returns the overflow count.
func decodeBF16Parallel(dst []uint16, src []byte) int {
	parts := min(runtime.GOMAXPROCS(0), len(dst)/(parallelDecodeMin/2))
	if parts <= 1 {
		return decodeBF16(dst, src)
	}
	counts := make([]int, parts)
	var wg sync.WaitGroup
	per := (len(dst) + parts - 1) / parts
	for p := range parts {
		lo, hi := p*per, min((p+1)*per, len(dst))
		wg.Add(1)
		go func() {
			defer wg.Done()
			counts[p] = decodeBF16(dst[lo:hi], src[2*lo:2*hi])
		}()
	}
	wg.Wait()
	n := 0
	for _, c := range counts {
		n += c
	}
	return n
}

// decodeBF16 is the serial table decode of BF16 src into dst. It reads
// four values per 64-bit load and only flags, per call, whether any
// magnitude reaches the overflow range (bit 15 of each 16-bit lane of
// |b| + 0x8000 − overflowFrom, which cannot carry into the next lane);
// the exact count is taken in a second pass only then.
func decodeBF16(dst []uint16, src []byte) (overflow int) {
	t := bf16Table()
	h := &t.half
	from := t.overflowFrom
	n := len(dst)
	src = src[:2*n]
	k := uint64(0x8000-from) * 0x0001_0001_0001_0001
	var flag uint64
	i := 0
	for ; i+4 <= n; i += 4 {
		x := binary.LittleEndian.Uint64(src[2*i:])
		d := dst[i : i+4 : i+4]
		d[0], d[1], d[2], d[3] = h[uint16(x)], h[uint16(x>>16)], h[uint16(x>>32)], h[x>>48]
		flag |= x&0x7fff_7fff_7fff_7fff + k
	}
	for ; i < n; i++ {
		b := uint16(src[2*i]) | uint16(src[2*i+1])<<8
		dst[i] = h[b]
		flag |= uint64(b&0x7fff) + k
	}
	if flag&0x8000_8000_8000_8000 == 0 {
		return 0
	}
	for i := range n {
		b := uint16(src[2*i]) | uint16(src[2*i+1])<<8
		if a := b & 0x7fff; a-from < 0x7f80-from {
			overflow++ // finite, beyond the half range
		}
	}
	return overflow
}

// bf16Halves is the BF16 → half conversion of every bit pattern, by the same
// rounding as fp16.FromFloat32 (BF16 widens to float32 exactly), so a
// decode is one table load per value.
type bf16Halves struct {
	half [1 << 16]uint16
	// overflowFrom is the smallest magnitude pattern (sign cleared) of a
	// finite BF16 value that becomes ±Inf; finite patterns from it up to
	// 0x7f80 (Inf) overflow.
	overflowFrom uint16
}

var bf16Once = sync.OnceValue(func() *bf16Halves {
	t := &bf16Halves{overflowFrom: 0x7f80}
	for i := range t.half {
		t.half[i] = uint16(fp16.FromFloat32(fp16.BF16ToFloat32(uint16(i))))
	}
	for a := uint16(0x7f7f); a > 0; a-- {
		if t.half[a] != 0x7c00 {
			break
		}
		t.overflowFrom = a
	}
	return t
})

func bf16Table() *bf16Halves { return bf16Once() }

// missingWeights explains a checkpoint directory without model.safetensors
// or its index: PyTorch pickles or other formats this package does not read,
// stray safetensors files, or no weights at all.
// The error wraps fs.ErrNotExist.
func missingWeights(dir string) error {
	glob := func(pattern string) []string {
		m, _ := filepath.Glob(filepath.Join(dir, pattern))
		for i := range m {
			m[i] = filepath.Base(m[i])
		}
		return m
	}
	want := fmt.Sprintf("hf: %s has no %s (or %s for a sharded checkpoint)", dir, SingleFile, IndexFile)
	if st := glob("*.safetensors"); len(st) > 0 {
		return notExist(fmt.Sprintf("%s, only %s: give the Hugging Face (transformers) layout of the checkpoint, whose weights are model.safetensors or shards listed in the index", want, strings.Join(st, ", ")))
	}
	var other []string
	for _, pat := range []string{"*.bin", "*.pt", "*.pth", "*.gguf", "*.ckpt"} {
		other = append(other, glob(pat)...)
	}
	if len(other) > 0 {
		return notExist(fmt.Sprintf("%s: it holds %s, which this tool does not read; save the checkpoint as safetensors first (transformers: save_pretrained(dir, safe_serialization=True))", want, strings.Join(other, ", ")))
	}
	return notExist(want + ": download the checkpoint's weights into it")
}

// notExist is a message that counts as fs.ErrNotExist for errors.Is.
type notExist string

func (e notExist) Error() string { return string(e) }
func (e notExist) Unwrap() error { return fs.ErrNotExist }
