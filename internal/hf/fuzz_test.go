package hf

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParseHeader feeds arbitrary header JSON and data-section lengths to the
// header parser. Whatever parses must satisfy the invariants the reader relies
// on, and must survive a re-encode through EncodeSafetensors.
func FuzzParseHeader(f *testing.F) {
	for _, sub := range []string{"bf16", "f32"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "tiny-llama-fortunes", sub, "model.safetensors"))
		if err != nil {
			f.Fatal(err)
		}
		n := binary.LittleEndian.Uint64(b)
		f.Add(b[8:8+n], int64(len(b))-8-int64(n))
	}
	f.Add([]byte(`{"a":{"dtype":"U8","shape":[],"data_offsets":[0,1]}}`), int64(1))
	f.Add([]byte(`{"__metadata__":{"k":"v"},"e":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}   `), int64(0))
	f.Fuzz(func(t *testing.T, hdr []byte, dataLen int64) {
		if dataLen < 0 || dataLen > 1<<40 {
			return
		}
		h, err := parseHeader(hdr, dataLen, "fuzz")
		if err != nil {
			return
		}
		var ts []WriteTensor
		var total int64
		for i, ti := range h.Tensors {
			if i > 0 && h.Tensors[i-1].Name >= ti.Name {
				t.Fatalf("tensors not sorted/unique: %q, %q", h.Tensors[i-1].Name, ti.Name)
			}
			if ti.Offset < h.DataOffset || ti.Size < 0 || ti.Offset+ti.Size > h.DataOffset+dataLen {
				t.Fatalf("tensor %q outside data: off %d size %d", ti.Name, ti.Offset, ti.Size)
			}
			if ti.NumElements()*ti.DType.Size() != ti.Size {
				t.Fatalf("tensor %q: size %d != elements*dtype", ti.Name, ti.Size)
			}
			if total += ti.Size; total > 1<<16 {
				return // keep the re-encode cheap
			}
			ts = append(ts, BytesTensor(ti.Name, ti.DType, ti.Shape, make([]byte, ti.Size)))
		}
		var buf bytes.Buffer
		if _, err := EncodeSafetensors(&buf, ts, h.Metadata); err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		h2, err := ParseFile(buf.Bytes(), "re-encoded")
		if err != nil {
			t.Fatalf("re-encoded file does not parse: %v", err)
		}
		if len(h2.Tensors) != len(h.Tensors) {
			t.Fatalf("re-encoded %d tensors, want %d", len(h2.Tensors), len(h.Tensors))
		}
		for i := range h2.Tensors {
			a, b := h.Tensors[i], h2.Tensors[i]
			if a.Name != b.Name || a.DType != b.DType || len(a.Shape) != len(b.Shape) || a.Size != b.Size {
				t.Fatalf("re-encoded tensor %d: %+v, want %+v", i, b, a)
			}
		}
	})
}
