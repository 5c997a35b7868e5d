package blob_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/anemll/anemll/internal/coreml/blob"
)

// FuzzReader feeds arbitrary bytes to the reader. Whatever parses must
// re-encode (with de-duplication off) to a file that reads back to the same
// blobs; nothing may panic or read out of range.
func FuzzReader(f *testing.F) {
	f.Add(golden(f))
	paths, _ := filepath.Glob(filepath.Join("testdata", "*.bin"))
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, file []byte) {
		r, err := blob.NewReader(bytes.NewReader(file), int64(len(file)))
		if err != nil {
			if !errors.Is(err, blob.ErrFormat) {
				t.Fatalf("NewReader error %v is not ErrFormat", err)
			}
			return
		}
		// Random offsets must not panic either.
		for _, off := range []uint64{64, 128, uint64(len(file)) &^ 63, uint64(len(file))} {
			if info, err := r.Blob(off); err == nil && info.End() > uint64(len(file)) {
				t.Fatalf("Blob(%d) = %+v past the %d-byte file", off, info, len(file))
			}
		}
		infos, err := r.All()
		if err != nil {
			return
		}
		var m memWS
		w := blob.NewWriter(&m)
		w.SetDedup(false)
		data := make([][]byte, len(infos))
		for i, info := range infos {
			if data[i], err = r.Data(info.Offset); err != nil {
				t.Fatalf("Data(%d) after All: %v", info.Offset, err)
			}
			off, err := w.Add(info.DType, data[i], info.Elements)
			if err != nil {
				t.Fatalf("re-adding %+v: %v", info, err)
			}
			if off != info.Offset {
				t.Fatalf("blob %d re-written at %d, read at %d", i, off, info.Offset)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if len(m.buf) != len(file) {
			t.Fatalf("re-encoded %d bytes, read %d", len(m.buf), len(file))
		}
		r2, err := blob.NewReader(bytes.NewReader(m.buf), int64(len(m.buf)))
		if err != nil {
			t.Fatal(err)
		}
		infos2, err := r2.All()
		if err != nil {
			t.Fatal(err)
		}
		for i := range infos {
			if infos2[i] != infos[i] {
				t.Fatalf("blob %d re-read as %+v, want %+v", i, infos2[i], infos[i])
			}
			d, err := r2.Data(infos2[i].Offset)
			if err != nil || !bytes.Equal(d, data[i]) {
				t.Fatalf("blob %d data changed (%v)", i, err)
			}
		}
	})
}
