package hf_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/anemll/anemll/internal/fp16"
	"github.com/anemll/anemll/internal/hf"
)

func open(t *testing.T, dir string) *hf.Checkpoint {
	t.Helper()
	c, err := hf.OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
	return c
}

func tinyNames() map[string][]int64 {
	m := map[string][]int64{
		"model.embed_tokens.weight": {1024, 128},
		"lm_head.weight":            {1024, 128},
		"model.norm.weight":         {128},
	}
	for i := 0; i < 4; i++ {
		p := fmt.Sprintf("model.layers.%d.", i)
		m[p+"input_layernorm.weight"] = []int64{128}
		m[p+"post_attention_layernorm.weight"] = []int64{128}
		m[p+"self_attn.q_proj.weight"] = []int64{128, 128}
		m[p+"self_attn.k_proj.weight"] = []int64{64, 128}
		m[p+"self_attn.v_proj.weight"] = []int64{64, 128}
		m[p+"self_attn.o_proj.weight"] = []int64{128, 128}
		m[p+"mlp.gate_proj.weight"] = []int64{384, 128}
		m[p+"mlp.up_proj.weight"] = []int64{384, 128}
		m[p+"mlp.down_proj.weight"] = []int64{128, 384}
	}
	return m
}

func TestTinyCheckpointBF16EqualsF32(t *testing.T) {
	b := open(t, filepath.Join(tinyDir, "bf16"))
	f := open(t, filepath.Join(tinyDir, "f32"))
	want := tinyNames()
	if len(b.Names()) != len(want) || !reflect.DeepEqual(b.Names(), f.Names()) {
		t.Fatalf("names: bf16 %d, f32 %d, want %d", len(b.Names()), len(f.Names()), len(want))
	}
	// The __metadata__ map ("format": "pt") is checked in TestReadHeader.
	var prev string
	for _, name := range b.Names() {
		if name <= prev {
			t.Errorf("names not sorted: %q after %q", name, prev)
		}
		prev = name
		ib, _ := b.Info(name)
		fi, _ := f.Info(name)
		if !reflect.DeepEqual(ib.Shape, want[name]) || !reflect.DeepEqual(fi.Shape, want[name]) {
			t.Errorf("%s: shapes %v / %v, want %v", name, ib.Shape, fi.Shape, want[name])
		}
		if ib.DType != hf.BF16 || fi.DType != hf.F32 {
			t.Errorf("%s: dtypes %v / %v", name, ib.DType, fi.DType)
		}
		vb, err := b.Float32(name)
		if err != nil {
			t.Fatal(err)
		}
		vf, err := f.Float32(name)
		if err != nil {
			t.Fatal(err)
		}
		// The F32 file holds the unrounded trained weights (not the BF16 ones
		// widened, as the fixture README says): BF16 = RNE(F32) exactly.
		for i := range vb {
			if math.Float32bits(vb[i]) != uint32(fp16.Float32ToBF16(vf[i]))<<16 {
				t.Fatalf("%s[%d]: bf16 widened %g != bf16(f32 %g)", name, i, vb[i], vf[i])
			}
		}
		raw, _ := b.Raw(name)
		if int64(len(raw)) != ib.Size || ib.Size != 2*ib.NumElements() {
			t.Errorf("%s: raw %d bytes, info size %d", name, len(raw), ib.Size)
		}
		// Half: one rounding from the exact stored value, for either file.
		for _, src := range []struct {
			c    *hf.Checkpoint
			vals []float32
		}{{b, vb}, {f, vf}} {
			h, over, err := src.c.Float16(name)
			if err != nil || over != 0 {
				t.Fatalf("%s: Float16: overflow %d, %v", name, over, err)
			}
			for i := range h {
				if h[i] != uint16(fp16.FromFloat32(src.vals[i])) {
					t.Fatalf("%s[%d]: half %#04x, want %#04x", name, i, h[i], fp16.FromFloat32(src.vals[i]))
				}
			}
		}
	}
	// Known values: first elements of the final norm in the F32 file.
	raw, _ := f.Raw("model.norm.weight")
	v, _ := f.Float32("model.norm.weight")
	if math.Float32frombits(binary.LittleEndian.Uint32(raw)) != v[0] {
		t.Errorf("Float32 does not decode the raw bytes")
	}
	if _, ok := b.Info("nope"); ok {
		t.Error("Info of a missing tensor reported ok")
	}
	if _, err := b.Float32("nope"); err == nil {
		t.Error("Float32 of a missing tensor succeeded")
	}
}

func TestFloat16Overflow(t *testing.T) {
	vals := []float32{1, -2.5, 65504, 65519.99, 65520, -1e6, float32(math.Inf(1)), 3e38, 1e-8, 0}
	buf := make([]byte, 4*len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(v))
	}
	bf := make([]byte, 2*len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint16(bf[2*i:], fp16.Float32ToBF16(v))
	}
	f16 := []byte{0x00, 0x3c, 0x00, 0x7c} // 1, +Inf
	dir := t.TempDir()
	err := hf.WriteSafetensors(filepath.Join(dir, "model.safetensors"), []hf.WriteTensor{
		hf.BytesTensor("f32", hf.F32, []int64{int64(len(vals))}, buf),
		hf.BytesTensor("bf16", hf.BF16, []int64{int64(len(vals))}, bf),
		hf.BytesTensor("f16", hf.F16, []int64{2}, f16),
		hf.BytesTensor("i32", hf.I32, []int64{1}, []byte{1, 0, 0, 0}),
	})
	if err != nil {
		t.Fatal(err)
	}
	c := open(t, dir)
	h, over, err := c.Float16("f32")
	if err != nil {
		t.Fatal(err)
	}
	want := []uint16{0x3c00, 0xc100, 0x7bff, 0x7bff, 0x7c00, 0xfc00, 0x7c00, 0x7c00, 0x0000, 0x0000}
	if !reflect.DeepEqual(h, want) || over != 3 {
		t.Errorf("f32 → half = %04x overflow %d, want %04x overflow 3", h, over, want)
	}
	// In BF16, 65504 and 65519.99 round to 65536, which is Inf in half: 5 overflows.
	if _, over, _ := c.Float16("bf16"); over != 5 {
		t.Errorf("bf16 overflow = %d, want 5", over)
	}
	h, over, _ = c.Float16("f16")
	if !reflect.DeepEqual(h, []uint16{0x3c00, 0x7c00}) || over != 0 {
		t.Errorf("f16 passthrough = %04x, %d", h, over)
	}
	v, _ := c.Float32("f16")
	if v[0] != 1 || !math.IsInf(float64(v[1]), 1) {
		t.Errorf("f16 → f32 = %v", v)
	}
	if _, err := c.Float32("i32"); !errors.Is(err, hf.ErrUnsupported) {
		t.Errorf("Float32 of I32: %v", err)
	}
	if _, _, err := c.Float16("i32"); !errors.Is(err, hf.ErrUnsupported) {
		t.Errorf("Float16 of I32: %v", err)
	}
}

func TestWriteReadRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "model.safetensors")
	tensors := []hf.WriteTensor{
		hf.BytesTensor("z.last", hf.U8, []int64{3}, []byte{7, 8, 9}),
		hf.BytesTensor("a.first", hf.F16, []int64{2, 1}, []byte{0, 0x3c, 0, 0xc0}),
		hf.BytesTensor("scalar", hf.I64, nil, []byte{1, 2, 3, 4, 5, 6, 7, 8}),
		hf.BytesTensor("empty", hf.F32, []int64{0, 4}, nil),
		{Name: "m.streamed", DType: hf.BF16, Shape: []int64{4}, Data: func(w io.Writer) error {
			for i := 0; i < 4; i++ { // many small writes
				if _, err := w.Write([]byte{byte(i), 0x3f}); err != nil {
					return err
				}
			}
			return nil
		}},
	}
	if err := hf.WriteSafetensors(path, tensors); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(b)
	if n%8 != 0 {
		t.Errorf("header length %d not a multiple of 8", n)
	}
	wantHdr := `{"__metadata__":{"format":"pt"},"a.first":{"dtype":"F16","shape":[2,1],"data_offsets":[0,4]},` +
		`"empty":{"dtype":"F32","shape":[0,4],"data_offsets":[4,4]},"m.streamed":{"dtype":"BF16","shape":[4],"data_offsets":[4,12]},` +
		`"scalar":{"dtype":"I64","shape":[],"data_offsets":[12,20]},"z.last":{"dtype":"U8","shape":[3],"data_offsets":[20,23]}}`
	if got := strings.TrimRight(string(b[8:8+n]), " "); got != wantHdr {
		t.Errorf("header\n got %s\nwant %s", got, wantHdr)
	}
	wantData := []byte{0, 0x3c, 0, 0xc0, 0, 0x3f, 1, 0x3f, 2, 0x3f, 3, 0x3f, 1, 2, 3, 4, 5, 6, 7, 8, 7, 8, 9}
	if !bytes.Equal(b[8+n:], wantData) {
		t.Errorf("data = %v, want %v", b[8+n:], wantData)
	}
	c := open(t, dir)
	if got := c.Names(); !reflect.DeepEqual(got, []string{"a.first", "empty", "m.streamed", "scalar", "z.last"}) {
		t.Errorf("names = %v", got)
	}
	for _, tt := range tensors {
		raw, err := c.Raw(tt.Name)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		tt.Data(&buf)
		info, _ := c.Info(tt.Name)
		if !bytes.Equal(raw, buf.Bytes()) || info.DType != tt.DType || len(info.Shape) != len(tt.Shape) {
			t.Errorf("%s: read back %v %v %v", tt.Name, raw, info.DType, info.Shape)
		}
	}
	v, _ := c.Float32("a.first")
	if !reflect.DeepEqual(v, []float32{1, -2}) {
		t.Errorf("a.first = %v", v)
	}
}

func TestWriteErrors(t *testing.T) {
	short := hf.BytesTensor("x", hf.F32, []int64{2}, make([]byte, 7))
	long := hf.BytesTensor("x", hf.F32, []int64{2}, make([]byte, 9))
	failing := hf.WriteTensor{Name: "x", DType: hf.F32, Shape: []int64{1}, Data: func(io.Writer) error { return io.ErrClosedPipe }}
	tests := map[string][]hf.WriteTensor{
		"short":     {short},
		"long":      {long},
		"failing":   {failing},
		"duplicate": {hf.BytesTensor("x", hf.U8, []int64{1}, []byte{1}), hf.BytesTensor("x", hf.U8, []int64{1}, []byte{1})},
		"metadata":  {hf.BytesTensor("__metadata__", hf.U8, []int64{1}, []byte{1})},
		"dtype":     {hf.BytesTensor("x", hf.DTypeInvalid, []int64{1}, []byte{1})},
		"negative":  {hf.BytesTensor("x", hf.U8, []int64{-1}, nil)},
		"huge":      {hf.BytesTensor("x", hf.F64, []int64{1 << 40, 1 << 40}, nil)},
		"nil data":  {{Name: "x", DType: hf.U8, Shape: []int64{1}}},
	}
	for name, ts := range tests {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "m.safetensors")
			if err := hf.WriteSafetensors(path, ts); err == nil {
				t.Fatal("write succeeded")
			}
			if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("failed write left %s behind (%v)", path, err)
			}
		})
	}
}

// tinyTensors re-streams every tensor of an open checkpoint.
func tinyTensors(c *hf.Checkpoint) []hf.WriteTensor {
	var ts []hf.WriteTensor
	for _, n := range c.Names() {
		info, _ := c.Info(n)
		raw, _ := c.Raw(n)
		ts = append(ts, hf.BytesTensor(n, info.DType, info.Shape, raw))
	}
	return ts
}

func TestShardedRoundTrip(t *testing.T) {
	src := open(t, filepath.Join(tinyDir, "bf16"))
	for _, shards := range []int{1, 2, 3, 39} {
		t.Run(fmt.Sprint(shards), func(t *testing.T) {
			dir := t.TempDir()
			if err := hf.WriteSharded(dir, tinyTensors(src), shards); err != nil {
				t.Fatal(err)
			}
			c := open(t, dir)
			if !reflect.DeepEqual(c.Names(), src.Names()) {
				t.Fatalf("names differ")
			}
			files := map[string]bool{}
			for _, n := range c.Names() {
				a, _ := src.Raw(n)
				b, _ := c.Raw(n)
				if !bytes.Equal(a, b) {
					t.Errorf("%s differs after sharding", n)
				}
				info, _ := c.Info(n)
				files[filepath.Base(info.File)] = true
			}
			if len(files) != shards {
				t.Errorf("tensors spread over %d files, want %d", len(files), shards)
			}
			if shards == 1 {
				if !files["model.safetensors"] {
					t.Errorf("single shard written as %v", files)
				}
				want, _ := os.ReadFile(filepath.Join(tinyDir, "bf16", "model.safetensors"))
				got, _ := os.ReadFile(filepath.Join(dir, "model.safetensors"))
				if !bytes.Equal(got, want) {
					t.Errorf("rewritten single file is not byte-identical to the fixture")
				}
				return
			}
			var idx struct {
				Metadata  map[string]int64
				WeightMap map[string]string `json:"weight_map"`
			}
			b, _ := os.ReadFile(filepath.Join(dir, hf.IndexFile))
			if err := json.Unmarshal(b, &idx); err != nil {
				t.Fatal(err)
			}
			if idx.Metadata["total_size"] != 2*1049728 || len(idx.WeightMap) != 39 ||
				idx.WeightMap["model.norm.weight"] == "" || !files[hf.ShardName(shards-1, shards)] {
				t.Errorf("index: total %d, %d entries, files %v", idx.Metadata["total_size"], len(idx.WeightMap), files)
			}
		})
	}
	if err := hf.WriteSharded(t.TempDir(), tinyTensors(src), 40); err == nil {
		t.Error("40 shards of 39 tensors accepted")
	}
}

// put rewrites the header of a safetensors file image, keeping its data.
func withHeader(file []byte, hdr string) []byte {
	n := binary.LittleEndian.Uint64(file)
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(hdr)))
	out = append(out, hdr...)
	return append(out, file[8+n:]...)
}

func TestCorruptSafetensors(t *testing.T) {
	good, err := os.ReadFile(filepath.Join(tinyDir, "bf16", "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(good)
	hdr := string(good[8 : 8+n])
	repl := func(old, new string) func([]byte) []byte {
		return func(b []byte) []byte {
			if !strings.Contains(hdr, old) {
				panic("fixture changed: " + old)
			}
			return withHeader(b, strings.Replace(hdr, old, new, 1))
		}
	}
	setLen := func(v uint64) func([]byte) []byte {
		return func(b []byte) []byte {
			b = bytes.Clone(b)
			binary.LittleEndian.PutUint64(b, v)
			return b
		}
	}
	normEntry := `"model.norm.weight":{"dtype":"BF16","shape":[128],"data_offsets":[`
	tests := []struct {
		name        string
		mess        func([]byte) []byte
		unsupported bool
	}{
		{"empty file", func([]byte) []byte { return nil }, false},
		{"7 bytes", func(b []byte) []byte { return b[:7] }, false},
		{"header length huge", setLen(1 << 62), false},
		{"header length past end", setLen(uint64(len(good))), false},
		{"header length 1", setLen(1), false},
		{"header over cap", setLen(hf.MaxHeaderSize + 8), false},
		{"truncated data", func(b []byte) []byte { return b[:len(b)-1] }, false},
		{"not json", repl(`{"__metadata__"`, `["__metadata__"`), false},
		{"broken json", repl(`"lm_head.weight":{`, `"lm_head.weight":{{`), false},
		{"trailing junk", func(b []byte) []byte { return withHeader(b, hdr+"x") }, false},
		{"unknown dtype", repl(`"lm_head.weight":{"dtype":"BF16"`, `"lm_head.weight":{"dtype":"Q4_K"`), true},
		{"offset beyond data", repl(`"data_offsets":[0,262144]`, `"data_offsets":[2200000,2462144]`), false},
		{"begin after end", repl(`"data_offsets":[0,262144]`, `"data_offsets":[262144,0]`), false},
		{"negative offset", repl(`"data_offsets":[0,262144]`, `"data_offsets":[-2,262142]`), false},
		{"size mismatch", repl(`"shape":[1024,128],"data_offsets":[0,262144]`, `"shape":[1024,127],"data_offsets":[0,262144]`), false},
		{"shape overflow", repl(`"shape":[1024,128],"data_offsets":[0,262144]`, `"shape":[4294967296,4294967296,65536],"data_offsets":[0,262144]`), false},
		{"negative dim", repl(`"shape":[1024,128],"data_offsets":[0,262144]`, `"shape":[-1024,-128],"data_offsets":[0,262144]`), false},
		{"three offsets", repl(`"data_offsets":[0,262144]`, `"data_offsets":[0,262144,1]`), false},
		{"missing dtype", repl(`"lm_head.weight":{"dtype":"BF16",`, `"lm_head.weight":{`), false},
		{"overlap", repl(`"data_offsets":[262144,524288]`, `"data_offsets":[131072,393216]`), false},
		{"duplicate name", repl(normEntry, `"lm_head.weight":{"dtype":"BF16","shape":[128],"data_offsets":[`), false},
		{"metadata not strings", repl(`{"format":"pt"}`, `{"format":1}`), false},
		{"tensor not object", repl(`"lm_head.weight":{"dtype":"BF16","shape":[1024,128],"data_offsets":[0,262144]}`, `"lm_head.weight":7`), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "model.safetensors")
			if err := os.WriteFile(path, tt.mess(good), 0o644); err != nil {
				t.Fatal(err)
			}
			c, err := hf.OpenCheckpoint(dir)
			if err == nil {
				c.Close()
				t.Fatal("corrupt file accepted")
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file", err)
			}
			var fe *hf.FormatError
			if tt.unsupported {
				if !errors.Is(err, hf.ErrUnsupported) || !strings.Contains(err.Error(), `"Q4_K"`) {
					t.Errorf("unknown dtype error %q should be ErrUnsupported naming the dtype", err)
				}
			} else if !errors.As(err, &fe) {
				t.Errorf("error %v (%T) is not a *FormatError", err, err)
			}
		})
	}
}

func TestCorruptShards(t *testing.T) {
	src := open(t, filepath.Join(tinyDir, "bf16"))
	type idxT struct {
		Metadata  map[string]any    `json:"metadata"`
		WeightMap map[string]string `json:"weight_map"`
	}
	tests := []struct {
		name string
		mess func(t *testing.T, dir string, idx *idxT)
		want string // must appear in the error
	}{
		{"missing shard", func(t *testing.T, dir string, idx *idxT) {
			os.Remove(filepath.Join(dir, hf.ShardName(1, 3)))
		}, hf.ShardName(1, 3)},
		{"tensor not in its shard", func(t *testing.T, dir string, idx *idxT) {
			idx.WeightMap["model.norm.weight"] = hf.ShardName(0, 3)
		}, `"model.norm.weight"`},
		{"duplicate across shards", func(t *testing.T, dir string, idx *idxT) {
			p := filepath.Join(dir, hf.ShardName(2, 3))
			raw, _ := src.Raw("lm_head.weight")
			if err := hf.WriteSafetensors(p, []hf.WriteTensor{hf.BytesTensor("lm_head.weight", hf.BF16, []int64{1024, 128}, raw)}); err != nil {
				t.Fatal(err)
			}
			for k, v := range idx.WeightMap {
				if v == hf.ShardName(2, 3) {
					delete(idx.WeightMap, k)
				}
			}
			idx.WeightMap["lm_head.weight"] = hf.ShardName(2, 3) // also still in shard 1
		}, `"lm_head.weight"`},
		{"path traversal", func(t *testing.T, dir string, idx *idxT) {
			idx.WeightMap["model.norm.weight"] = "../model.safetensors"
		}, `"../model.safetensors"`},
		{"empty weight map", func(t *testing.T, dir string, idx *idxT) {
			idx.WeightMap = nil
		}, "weight_map"},
		{"corrupt shard", func(t *testing.T, dir string, idx *idxT) {
			os.WriteFile(filepath.Join(dir, hf.ShardName(0, 3)), []byte("garbage!garbage!"), 0o644)
		}, hf.ShardName(0, 3)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := hf.WriteSharded(dir, tinyTensors(src), 3); err != nil {
				t.Fatal(err)
			}
			var idx idxT
			b, _ := os.ReadFile(filepath.Join(dir, hf.IndexFile))
			if err := json.Unmarshal(b, &idx); err != nil {
				t.Fatal(err)
			}
			tt.mess(t, dir, &idx)
			b, _ = json.Marshal(idx)
			os.WriteFile(filepath.Join(dir, hf.IndexFile), b, 0o644)
			c, err := hf.OpenCheckpoint(dir)
			if err == nil {
				c.Close()
				t.Fatal("corrupt sharded checkpoint accepted")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %s", err, tt.want)
			}
		})
	}
	t.Run("bad index json", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, hf.IndexFile), []byte(`{"weight_map":`), 0o644)
		var fe *hf.FormatError
		if _, err := hf.OpenCheckpoint(dir); !errors.As(err, &fe) {
			t.Errorf("bad index: %v", err)
		}
	})
	t.Run("no weights", func(t *testing.T) {
		if _, err := hf.OpenCheckpoint(t.TempDir()); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("empty dir: %v", err)
		}
	})
}

func TestParseDType(t *testing.T) {
	for _, tt := range []struct {
		name string
		dt   hf.DType
		size int64
	}{{"F32", hf.F32, 4}, {"BF16", hf.BF16, 2}, {"F16", hf.F16, 2}, {"I64", hf.I64, 8}, {"F8_E4M3", hf.F8E4M3, 1}, {"BOOL", hf.BOOL, 1}} {
		dt, err := hf.ParseDType(tt.name)
		if err != nil || dt != tt.dt || dt.Size() != tt.size || dt.String() != tt.name {
			t.Errorf("ParseDType(%q) = %v (size %d), %v", tt.name, dt, dt.Size(), err)
		}
	}
	for _, bad := range []string{"", "invalid", "f32", "Q8_0"} {
		if _, err := hf.ParseDType(bad); !errors.Is(err, hf.ErrUnsupported) {
			t.Errorf("ParseDType(%q) = %v", bad, err)
		}
	}
}

func BenchmarkFloat32BF16(b *testing.B) {
	c, err := hf.OpenCheckpoint(filepath.Join(tinyDir, "bf16"))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	info, _ := c.Info("model.embed_tokens.weight")
	b.SetBytes(info.Size)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Float32("model.embed_tokens.weight"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpenCheckpoint(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		c, err := hf.OpenCheckpoint(filepath.Join(tinyDir, "bf16"))
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}

func TestReadHeader(t *testing.T) {
	path := filepath.Join(tinyDir, "bf16", "model.safetensors")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	h, err := hf.ReadHeader(bytes.NewReader(b), int64(len(b)), path)
	if err != nil {
		t.Fatal(err)
	}
	c := open(t, filepath.Join(tinyDir, "bf16"))
	if len(h.Tensors) != 39 || h.DataOffset != 8+int64(binary.LittleEndian.Uint64(b)) || h.Metadata["format"] != "pt" {
		t.Errorf("header: %d tensors, data at %d, metadata %v", len(h.Tensors), h.DataOffset, h.Metadata)
	}
	for _, ti := range h.Tensors {
		info, ok := c.Info(ti.Name)
		if !ok || !reflect.DeepEqual(info, ti) {
			t.Errorf("%s: ReadHeader %+v, Checkpoint %+v", ti.Name, ti, info)
		}
	}
	// The header alone is not enough: offsets are checked against the size.
	n := 8 + int(binary.LittleEndian.Uint64(b))
	if _, err := hf.ReadHeader(bytes.NewReader(b[:n]), int64(n), path); err == nil {
		t.Error("header without its data section accepted")
	}
	// A reader shorter than the size it claims gives an error, not a panic.
	if _, err := hf.ReadHeader(bytes.NewReader(b[:100]), int64(len(b)), path); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("short reader: %v", err)
	}
}

func TestHeaderKeysAreCaseSensitive(t *testing.T) {
	good, _ := os.ReadFile(filepath.Join(tinyDir, "bf16", "model.safetensors"))
	n := binary.LittleEndian.Uint64(good)
	hdr := strings.Replace(string(good[8:8+n]), `"lm_head.weight":{"dtype"`, `"lm_head.weight":{"dtYpe"`, 1)
	var fe *hf.FormatError
	if _, err := hf.ParseFile(withHeader(good, hdr), "x"); !errors.As(err, &fe) {
		t.Errorf("dtYpe accepted: %v", err)
	}
	// Unknown extra keys are ignored, as in the reference implementation.
	hdr = strings.Replace(string(good[8:8+n]), `"lm_head.weight":{"dtype"`, `"lm_head.weight":{"extra":[1],"dtype"`, 1)
	if _, err := hf.ParseFile(withHeader(good, hdr), "x"); err != nil {
		t.Errorf("extra key refused: %v", err)
	}
}

// TestMissingWeights opens checkpoint directories without model.safetensors
// or its index and checks that each message names what the directory holds
// and what to do.
func TestMissingWeights(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files []string
		want  []string
	}{
		{"pytorch pickle", []string{"pytorch_model.bin"}, []string{"pytorch_model.bin", "does not read", "safe_serialization=True"}},
		{"gguf", []string{"model-q4.gguf"}, []string{"model-q4.gguf", "does not read"}},
		{"mistral native", []string{"consolidated.safetensors"}, []string{"only consolidated.safetensors", "transformers"}},
		{"nothing", nil, []string{"has no model.safetensors", "download"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, "config.json"), []byte("{}"), 0o644)
			for _, f := range tc.files {
				os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o644)
			}
			_, err := hf.OpenCheckpoint(dir)
			if !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("err = %v, want one wrapping fs.ErrNotExist", err)
			}
			for _, w := range append(tc.want, dir) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}
