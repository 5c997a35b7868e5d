package blob_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/anemll/anemll/internal/coreml/blob"
)

// pack packs values LSB-first, element i at bits [i·b, i·b+b). It is a test
// helper kept independent of the production bit packer.
func pack(bits int, vals []uint64) []byte {
	out := make([]byte, (len(vals)*bits+7)/8)
	for i, v := range vals {
		for j := range bits {
			if v>>j&1 == 1 {
				p := i*bits + j
				out[p/8] |= 1 << (p % 8)
			}
		}
	}
	return out
}

// dump builds a byte slice of the given size from "offset: hex" lines
// (offset in hex, spaces in the hex ignored); bytes not listed are zero.
func dump(t testing.TB, size int, text string) []byte {
	t.Helper()
	out := make([]byte, size)
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		o, h, ok := strings.Cut(line, ":")
		if !ok {
			t.Fatalf("bad dump line %q", line)
		}
		off, err := strconv.ParseUint(strings.TrimSpace(o), 16, 32)
		if err != nil {
			t.Fatal(err)
		}
		b, err := hex.DecodeString(strings.ReplaceAll(h, " ", ""))
		if err != nil {
			t.Fatal(err)
		}
		copy(out[off:], b)
	}
	return out
}

// golden is the empirical dump of Apple's StorageWriter from
// coreml-format.md §4: fp16 [1,-2,0.5]; uint4 1..13; uint6 [1,2,63,4,5];
// fp32 [1.0].
func golden(t testing.TB) []byte {
	return dump(t, 0x204, `
0000: 04000000 02000000
0040: efbeadde 01000000 0600000000000000 8000000000000000 0000000000000000
0080: 003c 00c0 0038
00c0: efbeadde 0b000000 0700000000000000 0001000000000000 0400000000000000
0100: 21 43 65 87 a9 cb 0d
0140: efbeadde 0d000000 0400000000000000 8001000000000000 0200000000000000
0180: 81 f0 13 05
01c0: efbeadde 02000000 0400000000000000 0002000000000000
0200: 0000803f
`)
}

type addCase struct {
	dt   blob.DType
	data []byte
	n    int64
}

func goldenBlobs(t testing.TB) []addCase {
	u4 := pack(4, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13})
	u6 := pack(6, []uint64{1, 2, 63, 4, 5})
	if want := []byte{0x21, 0x43, 0x65, 0x87, 0xa9, 0xcb, 0x0d}; !bytes.Equal(u4, want) {
		t.Fatalf("uint4 packing % x, want % x", u4, want)
	}
	if want := []byte{0x81, 0xf0, 0x13, 0x05}; !bytes.Equal(u6, want) {
		t.Fatalf("uint6 packing % x, want % x", u6, want)
	}
	return []addCase{
		{blob.Float16, []byte{0x00, 0x3c, 0x00, 0xc0, 0x00, 0x38}, 3},
		{blob.UInt4, u4, 13},
		{blob.UInt6, u6, 5},
		{blob.Float32, binary.LittleEndian.AppendUint32(nil, math.Float32bits(1)), 1},
	}
}

func writeAll(t testing.TB, blobs []addCase) ([]byte, []uint64) {
	t.Helper()
	var m memWS
	w := blob.NewWriter(&m)
	var offs []uint64
	for _, b := range blobs {
		off, err := w.Add(b.dt, b.data, b.n)
		if err != nil {
			t.Fatalf("Add(%v, %d): %v", b.dt, b.n, err)
		}
		offs = append(offs, off)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if int64(len(m.buf)) != w.Size() || m.pos != w.Size() {
		t.Fatalf("file %d bytes, position %d, Size() %d", len(m.buf), m.pos, w.Size())
	}
	return m.buf, offs
}

func TestDType(t *testing.T) {
	tests := []struct {
		d    blob.DType
		name string
		bits int
		sub  bool
	}{
		{blob.Float16, "Float16", 16, false},
		{blob.Float32, "Float32", 32, false},
		{blob.UInt8, "UInt8", 8, false},
		{blob.Int8, "Int8", 8, false},
		{blob.BFloat16, "BFloat16", 16, false},
		{blob.Int16, "Int16", 16, false},
		{blob.UInt16, "UInt16", 16, false},
		{blob.Int4, "Int4", 4, true},
		{blob.UInt1, "UInt1", 1, true},
		{blob.UInt2, "UInt2", 2, true},
		{blob.UInt4, "UInt4", 4, true},
		{blob.UInt3, "UInt3", 3, true},
		{blob.UInt6, "UInt6", 6, true},
		{blob.Int32, "Int32", 32, false},
		{blob.UInt32, "UInt32", 32, false},
		{blob.Float8E4M3FN, "Float8E4M3FN", 8, false},
		{blob.Float8E5M2, "Float8E5M2", 8, false},
		{0, "DType(0)", 0, false},
		{18, "DType(18)", 0, false},
		{math.MaxUint32, "DType(4294967295)", 0, false},
	}
	for i, tc := range tests {
		if i < 17 && uint32(tc.d) != uint32(i+1) {
			t.Errorf("%s = %d, want %d", tc.name, tc.d, i+1)
		}
		if got := tc.d.String(); got != tc.name {
			t.Errorf("DType(%d).String() = %q, want %q", uint32(tc.d), got, tc.name)
		}
		if got := tc.d.Bits(); got != tc.bits {
			t.Errorf("%v.Bits() = %d, want %d", tc.d, got, tc.bits)
		}
		if got := tc.d.SubByte(); got != tc.sub {
			t.Errorf("%v.SubByte() = %v, want %v", tc.d, got, tc.sub)
		}
		if got := tc.d.Valid(); got != (tc.bits != 0) {
			t.Errorf("%v.Valid() = %v", tc.d, got)
		}
	}
}

func TestPackedSize(t *testing.T) {
	tests := []struct {
		d    blob.DType
		n    int64
		size int64
		pad  int
		ok   bool
	}{
		{blob.Float16, 3, 6, 0, true},
		{blob.Float32, 500, 2000, 0, true},
		{blob.UInt4, 13, 7, 4, true},
		{blob.UInt4, 14, 7, 0, true},
		{blob.UInt6, 5, 4, 2, true},
		{blob.UInt6, 4096, 3072, 0, true},
		{blob.UInt3, 7, 3, 3, true},
		{blob.UInt1, 9, 2, 7, true},
		{blob.UInt2, 1, 1, 6, true},
		{blob.Int4, 1, 1, 4, true},
		{blob.UInt8, 0, 0, 0, true},
		{blob.UInt1, 0, 0, 0, true},
		{blob.Float16, -1, 0, 0, false},
		{0, 1, 0, 0, false},
		{blob.Float32, math.MaxInt64 / 4, 0, 0, false},
		{blob.UInt1, math.MaxInt64, 0, 0, false},
	}
	for _, tc := range tests {
		size, pad, ok := tc.d.PackedSize(tc.n)
		if size != tc.size || pad != tc.pad || ok != tc.ok {
			t.Errorf("%v.PackedSize(%d) = %d, %d, %v; want %d, %d, %v", tc.d, tc.n, size, pad, ok, tc.size, tc.pad, tc.ok)
		}
	}
}

func TestWriterGolden(t *testing.T) {
	got, offs := writeAll(t, goldenBlobs(t))
	want := golden(t)
	if !bytes.Equal(got, want) {
		t.Errorf("weight.bin differs from Apple's dump\ngot:\n%s\nwant:\n%s", hex.Dump(got), hex.Dump(want))
	}
	if fmt.Sprint(offs) != "[64 192 320 448]" {
		t.Errorf("offsets %v, want [64 192 320 448]", offs)
	}
}

// TestWriterCoremltoolsOffsets reproduces coremltools' test: a 500×fp32
// blob at 64 puts the next record at 2176 (data 128..2128, aligned up).
func TestWriterCoremltoolsOffsets(t *testing.T) {
	a := make([]byte, 2000)
	for i := range 500 {
		binary.LittleEndian.PutUint32(a[4*i:], math.Float32bits(float32(i)))
	}
	file, offs := writeAll(t, []addCase{{blob.Float32, a, 500}, {blob.Float32, a[:4], 1}})
	if offs[0] != 64 || offs[1] != 2176 {
		t.Errorf("offsets %v, want [64 2176]", offs)
	}
	if len(file) != 2176+64+4 {
		t.Errorf("file size %d, want %d", len(file), 2176+64+4)
	}
	if !bytes.Equal(file[2128:2176], make([]byte, 48)) {
		t.Errorf("gap 2128..2176 not zero: % x", file[2128:2176])
	}
}

func TestWriterDedup(t *testing.T) {
	x := []byte{1, 2, 3, 4, 5, 6, 7}
	var m memWS
	w := blob.NewWriter(&m)
	add := func(dt blob.DType, data []byte, n int64) uint64 {
		t.Helper()
		off, err := w.Add(dt, data, n)
		if err != nil {
			t.Fatal(err)
		}
		return off
	}
	a := add(blob.UInt8, x, 7)
	if b := add(blob.UInt8, bytes.Clone(x), 7); b != a {
		t.Errorf("identical blob stored at %d and %d", a, b)
	}
	c := add(blob.Int8, x, 7) // same bytes, other dtype
	d := add(blob.UInt4, x, 13)
	e := add(blob.UInt4, x, 14) // same bytes and dtype, other padding
	f := add(blob.UInt8, []byte{1, 2, 3, 4, 5, 6, 8}, 7)
	if got := []uint64{a, c, d, e, f}; fmt.Sprint(got) != "[64 192 320 448 576]" {
		t.Errorf("offsets %v, want [64 192 320 448 576]", got)
	}
	if add(blob.UInt4, x, 13) != d || add(blob.UInt4, x, 14) != e {
		t.Error("repeat of a sub-byte blob not de-duplicated")
	}
	w.SetDedup(false)
	if g := add(blob.UInt8, x, 7); g != 704 {
		t.Errorf("with dedup off, offset %d, want 704", g)
	}
	if w.Count() != 6 {
		t.Errorf("Count() = %d, want 6", w.Count())
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := blob.NewReader(bytes.NewReader(m.buf), int64(len(m.buf)))
	if err != nil {
		t.Fatal(err)
	}
	infos, err := r.All()
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 6 || infos[3].PadBits != 0 || infos[2].PadBits != 4 || infos[2].Elements != 13 {
		t.Errorf("read back %+v", infos)
	}
}

func TestWriterAddErrors(t *testing.T) {
	var m memWS
	w := blob.NewWriter(&m)
	tests := []struct {
		name string
		dt   blob.DType
		data []byte
		n    int64
	}{
		{"unknown dtype", 18, []byte{1}, 1},
		{"zero dtype", 0, nil, 0},
		{"negative count", blob.UInt8, nil, -1},
		{"short data", blob.Float16, []byte{1, 2, 3}, 2},
		{"long data", blob.Float16, []byte{1, 2, 3, 4, 5}, 2},
		{"sub-byte too long", blob.UInt4, []byte{1, 2}, 1},
		{"sub-byte too short", blob.UInt6, []byte{1}, 2},
		{"overflowing count", blob.Float32, nil, math.MaxInt64},
	}
	for _, tc := range tests {
		if off, err := w.Add(tc.dt, tc.data, tc.n); err == nil {
			t.Errorf("%s: Add succeeded at %d", tc.name, off)
		}
	}
	// Bad arguments leave the writer usable.
	off, err := w.Add(blob.UInt8, []byte{9}, 1)
	if err != nil || off != 64 {
		t.Fatalf("Add after refused adds = %d, %v; want 64, nil", off, err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if len(m.buf) != 129 || binary.LittleEndian.Uint32(m.buf) != 1 {
		t.Errorf("file %d bytes, count %d; want 129, 1", len(m.buf), binary.LittleEndian.Uint32(m.buf))
	}
	if _, err := w.Add(blob.UInt8, []byte{9}, 1); !errors.Is(err, blob.ErrClosed) {
		t.Errorf("Add after Close: %v, want ErrClosed", err)
	}
	if err := w.Close(); !errors.Is(err, blob.ErrClosed) {
		t.Errorf("second Close: %v, want ErrClosed", err)
	}
}

func TestWriterStickyError(t *testing.T) {
	big := make([]byte, 2<<20) // larger than the buffer, so the write reaches the device
	f := &failWS{limit: 1 << 20}
	w := blob.NewWriter(f)
	if _, err := w.Add(blob.UInt8, big, int64(len(big))); !errors.Is(err, errDisk) {
		t.Fatalf("Add on full disk: %v, want %v", err, errDisk)
	}
	if _, err := w.Add(blob.UInt8, []byte{1}, 1); !errors.Is(err, errDisk) {
		t.Errorf("Add after failure: %v, want sticky %v", err, errDisk)
	}
	if err := w.Close(); !errors.Is(err, errDisk) {
		t.Errorf("Close after failure: %v, want sticky %v", err, errDisk)
	}

	// A failure that only shows when Close flushes.
	f = &failWS{limit: 100}
	w = blob.NewWriter(f)
	if _, err := w.Add(blob.UInt8, []byte{1, 2, 3}, 3); err != nil {
		t.Fatalf("buffered Add: %v", err)
	}
	if err := w.Close(); !errors.Is(err, errDisk) {
		t.Errorf("Close: %v, want %v", err, errDisk)
	}
}

// TestWriterBase checks that a weight.bin may start mid-stream: offsets
// and the header patch are relative to the starting position.
func TestWriterBase(t *testing.T) {
	m := memWS{buf: []byte("prefix!"), pos: 7}
	w := blob.NewWriter(&m)
	for _, b := range goldenBlobs(t) {
		if _, err := w.Add(b.dt, b.data, b.n); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if want := append([]byte("prefix!"), golden(t)...); !bytes.Equal(m.buf, want) {
		t.Errorf("mid-stream file differs:\n%s", hex.Dump(m.buf))
	}
}

func TestWriterEmpty(t *testing.T) {
	file, _ := writeAll(t, nil)
	want := make([]byte, 64)
	want[4] = 2
	if !bytes.Equal(file, want) {
		t.Fatalf("empty file % x", file)
	}
	r, err := blob.NewReader(bytes.NewReader(file), 64)
	if err != nil {
		t.Fatal(err)
	}
	if infos, err := r.All(); err != nil || len(infos) != 0 {
		t.Errorf("All() = %v, %v", infos, err)
	}
}

func TestReaderGolden(t *testing.T) {
	file := golden(t)
	r, err := blob.NewReader(bytes.NewReader(file), int64(len(file)))
	if err != nil {
		t.Fatal(err)
	}
	infos, err := r.All()
	if err != nil {
		t.Fatal(err)
	}
	want := []blob.Info{
		{Offset: 64, DType: blob.Float16, Size: 6, DataOffset: 128, PadBits: 0, Elements: 3},
		{Offset: 192, DType: blob.UInt4, Size: 7, DataOffset: 256, PadBits: 4, Elements: 13},
		{Offset: 320, DType: blob.UInt6, Size: 4, DataOffset: 384, PadBits: 2, Elements: 5},
		{Offset: 448, DType: blob.Float32, Size: 4, DataOffset: 512, PadBits: 0, Elements: 1},
	}
	if fmt.Sprint(infos) != fmt.Sprint(want) {
		t.Errorf("All() =\n%+v\nwant\n%+v", infos, want)
	}
	for i, b := range goldenBlobs(t) {
		data, err := r.Data(want[i].Offset)
		if err != nil || !bytes.Equal(data, b.data) {
			t.Errorf("Data(%d) = % x, %v; want % x", want[i].Offset, data, err, b.data)
		}
		sr, info, err := r.Section(want[i].Offset)
		if err != nil || info != want[i] {
			t.Fatalf("Section(%d): %+v, %v", want[i].Offset, info, err)
		}
		got, err := io.ReadAll(sr)
		if err != nil || !bytes.Equal(got, b.data) {
			t.Errorf("Section(%d) data % x, %v", want[i].Offset, got, err)
		}
	}
}

func TestReaderRealFiles(t *testing.T) {
	tests := []struct {
		file   string
		count  int
		dtypes string // dtype of every blob, repeating
		elems  []int64
		sha    string
	}{
		{"embeddings_fp16.weight.bin", 1, "Float16", []int64{32768}, "ff8fc75a04d7b22b36d9ae43028847369599c69acd267c2f17caf49f73fb68ac"},
		{"lm_head_lut6.weight.bin", 16, "UInt6 Float16", []int64{4096, 512}, "ba945aa7c12de6915dc391aa4aaeb8e85e32be071aaa09795ccd35f4a89bf832"},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			path := filepath.Join("testdata", tc.file)
			f, err := blob.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			infos, err := f.All()
			if err != nil {
				t.Fatal(err)
			}
			if len(infos) != tc.count || f.Count() != tc.count {
				t.Fatalf("%d blobs (header %d), want %d", len(infos), f.Count(), tc.count)
			}
			names := strings.Fields(tc.dtypes)
			var m memWS
			w := blob.NewWriter(&m)
			for i, info := range infos {
				if info.DType.String() != names[i%len(names)] || info.Elements != tc.elems[i%len(tc.elems)] || info.PadBits != 0 {
					t.Errorf("blob %d: %+v", i, info)
				}
				data, err := f.Data(info.Offset)
				if err != nil {
					t.Fatal(err)
				}
				off, err := w.Add(info.DType, data, info.Elements)
				if err != nil {
					t.Fatal(err)
				}
				if off != info.Offset {
					t.Errorf("blob %d rewritten at %d, want %d", i, off, info.Offset)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			orig, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprintf("%x", sha256.Sum256(orig)) != tc.sha {
				t.Fatalf("testdata file changed: sha256 %x", sha256.Sum256(orig))
			}
			if !bytes.Equal(m.buf, orig) {
				t.Errorf("rewritten file (%d bytes) differs from the original (%d bytes)", len(m.buf), len(orig))
			}
		})
	}
}

// put returns a copy of b with a little-endian value of len(v) bytes
// written at off.
func put(b []byte, off int, v []byte) []byte {
	b = bytes.Clone(b)
	copy(b[off:], v)
	return b
}

func u32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
func u64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

// TestReaderCorrupt corrupts the golden file in code; every variant must
// give an ErrFormat error from NewReader or All, never a panic.
func TestReaderCorrupt(t *testing.T) {
	g := golden(t)
	tests := []struct {
		name string
		file []byte
		size int64 // 0: len(file)
	}{
		{"empty", nil, 0},
		{"short header", g[:63], 0},
		{"version 1", put(g, 4, u32(1)), 0},
		{"version 3", put(g, 4, u32(3)), 0},
		{"huge count", put(g, 0, u32(math.MaxUint32)), 0},
		{"count exceeds file", put(g, 0, u32(8)), 0},
		{"count 5", put(g, 0, u32(5)), 0},
		{"count 3 leaves trailing blob", put(g, 0, u32(3)), 0},
		{"trailing byte", append(bytes.Clone(g), 0), 0},
		{"truncated data", g[:0x203], 0},
		{"truncated metadata", g[:0x1d0], 0},
		{"bad sentinel", put(g, 0x40, u32(0xDEADBEEE)), 0},
		{"zero sentinel in 3rd", put(g, 0x140, u32(0)), 0},
		{"unknown dtype", put(g, 0x44, u32(18)), 0},
		{"dtype 0", put(g, 0xc4, u32(0)), 0},
		{"size past EOF", put(g, 0x1c8, u64(5)), 0},
		{"huge size", put(g, 0x48, u64(math.MaxUint64)), 0},
		{"huge size minus data offset", put(g, 0x48, u64(math.MaxUint64-0x7f)), 0},
		{"data offset wrong", put(g, 0x50, u64(0x88)), 0},
		{"data offset huge", put(g, 0x50, u64(math.MaxUint64)), 0},
		{"pad bits on fp16", put(g, 0x58, u64(1)), 0},
		{"pad bits 8 on uint4", put(g, 0xd8, u64(8)), 0},
		{"pad bits huge", put(g, 0xd8, u64(math.MaxUint64)), 0},
		{"pad bits inconsistent uint6", put(g, 0x158, u64(3)), 0},
		{"odd fp16 size", put(g, 0x48, u64(5)), 0},
		{"reserved 1", put(g, 0x60, u64(1)), 0},
		{"reserved 4", put(g, 0x78, u64(1)), 0},
		{"reserved in last", put(g, 0x1fc, []byte{0x80}), 0},
		{"size beyond reader", g, 1 << 40},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			size := tc.size
			if size == 0 {
				size = int64(len(tc.file))
			}
			r, err := blob.NewReader(bytes.NewReader(tc.file), size)
			if err == nil {
				var infos []blob.Info
				infos, err = r.All()
				if err == nil {
					t.Fatalf("corrupt file accepted: %+v", infos)
				}
			}
			t.Log(err)
			if !errors.Is(err, blob.ErrFormat) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("error %v is neither ErrFormat nor ErrUnexpectedEOF", err)
			}
			var fe *blob.FormatError
			if errors.As(err, &fe) && (fe.Off < 0 || fe.Off > int64(len(tc.file))+1) {
				t.Errorf("error offset %d outside the file", fe.Off)
			}
		})
	}
}

func TestReaderBlobOffsets(t *testing.T) {
	g := golden(t)
	r, err := blob.NewReader(bytes.NewReader(g), int64(len(g)))
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []uint64{0, 32, 63, 65, 128, 0x1c0 + 64, 0x200, 0x240, 1 << 62, math.MaxUint64, math.MaxUint64 - 63} {
		if info, err := r.Blob(off); !errors.Is(err, blob.ErrFormat) {
			t.Errorf("Blob(%d) = %+v, %v; want ErrFormat", off, info, err)
		}
		if _, err := r.Data(off); err == nil {
			t.Errorf("Data(%d) succeeded", off)
		}
	}
	// Header claims more data than the reader holds: a read error, no panic.
	short := g[:0x1f0]
	r, err = blob.NewReader(bytes.NewReader(short), int64(len(g)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Data(448); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("Data past the reader's end: %v, want ErrUnexpectedEOF", err)
	}
}

func TestOpenMissing(t *testing.T) {
	if _, err := blob.Open(filepath.Join(t.TempDir(), "nope.bin")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open(missing) = %v", err)
	}
	p := filepath.Join(t.TempDir(), "bad.bin")
	if err := os.WriteFile(p, []byte("not a weight file, but longer than sixty-four bytes........................"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := blob.Open(p); !errors.Is(err, blob.ErrFormat) {
		t.Errorf("Open(bad) = %v, want ErrFormat", err)
	}
}

// TestWriterFile writes through a real *os.File.
func TestWriterFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "weight.bin")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	w := blob.NewWriter(f)
	for _, b := range goldenBlobs(t) {
		if _, err := w.Add(b.dt, b.data, b.n); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, golden(t)) {
		t.Errorf("file differs from golden:\n%s", hex.Dump(got))
	}
}

// TestWriterDedupLarge: blobs longer than the hashing chunk are equal
// only if every chunk is: a copy is de-duplicated, a change in the first,
// a middle or the last byte is not.
func TestWriterDedupLarge(t *testing.T) {
	const n = 200_003 // a few 64 KiB chunks and a partial one
	base := make([]byte, n)
	for i := range base {
		base[i] = byte(i * 7)
	}
	var m memWS
	w := blob.NewWriter(&m)
	first, err := w.Add(blob.UInt8, base, n)
	if err != nil {
		t.Fatal(err)
	}
	if off, err := w.Add(blob.UInt8, bytes.Clone(base), n); err != nil || off != first {
		t.Errorf("copy stored at %d (%v), want %d", off, err, first)
	}
	for _, at := range []int{0, 70_000, n - 1} {
		other := bytes.Clone(base)
		other[at]++
		if off, err := w.Add(blob.UInt8, other, n); err != nil || off == first {
			t.Errorf("byte %d changed: offset %d (%v), first %d", at, off, err, first)
		}
	}
	if w.Count() != 4 {
		t.Errorf("Count() = %d, want 4", w.Count())
	}
}

// TestWriterDedupReadBack: on a file that can be read back, large blobs
// are de-duplicated exactly: a copy shares the first blob; a change at a
// sampled or an unsampled byte makes a new blob, and a copy of that one
// (same samples as the first) shares it, not the first; the file is the
// one a writer without read-back makes.
func TestWriterDedupReadBack(t *testing.T) {
	const n = 1_000_003
	base := make([]byte, n)
	for i := range base {
		base[i] = byte(i*7 + i>>11)
	}
	unsampled := bytes.Clone(base)
	unsampled[12345]++ // between sample windows
	sampled := bytes.Clone(base)
	sampled[n-1]++ // in the last window
	blobs := [][]byte{base, bytes.Clone(base), unsampled, sampled, bytes.Clone(unsampled), bytes.Clone(base), []byte{1, 2, 3}, []byte{1, 2, 3}}
	var rw rwWS
	var plain memWS
	a, b := blob.NewWriter(&rw), blob.NewWriter(&plain)
	var offs []uint64
	for i, d := range blobs {
		x, err := a.Add(blob.UInt8, d, int64(len(d)))
		if err != nil {
			t.Fatal(err)
		}
		y, err := b.Add(blob.UInt8, d, int64(len(d)))
		if err != nil {
			t.Fatal(err)
		}
		if x != y {
			t.Errorf("blob %d: offset %d with read-back, %d without", i, x, y)
		}
		offs = append(offs, x)
	}
	if offs[1] != offs[0] || offs[5] != offs[0] || offs[4] != offs[2] || offs[7] != offs[6] {
		t.Errorf("copies not shared: offsets %v", offs)
	}
	if offs[2] == offs[0] || offs[3] == offs[0] || offs[3] == offs[2] {
		t.Errorf("different blobs shared: offsets %v", offs)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if a.Count() != 4 || !bytes.Equal(rw.buf, plain.buf) {
		t.Errorf("%d blobs; files equal: %v", a.Count(), bytes.Equal(rw.buf, plain.buf))
	}
}
