package blob_test

import (
	"bytes"
	"io"
	"testing"

	"github.com/anemll/anemll/internal/coreml/blob"
)

// discardWS is an io.WriteSeeker that drops the data.
type discardWS struct{ pos, end int64 }

func (d *discardWS) Write(p []byte) (int, error) {
	d.pos += int64(len(p))
	d.end = max(d.end, d.pos)
	return len(p), nil
}

func (d *discardWS) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		off += d.pos
	case io.SeekEnd:
		off += d.end
	}
	d.pos = off
	return off, nil
}

// BenchmarkWriter streams 64 MiB in 1 MiB fp16 blobs (distinct contents so
// de-duplication hashes but never hits), with and without de-duplication.
func BenchmarkWriter(b *testing.B) {
	for _, dedup := range []bool{true, false} {
		name := "dedup"
		if !dedup {
			name = "nodedup"
		}
		b.Run(name, func(b *testing.B) {
			data := make([]byte, 1<<20)
			b.SetBytes(64 << 20)
			b.ReportAllocs()
			for b.Loop() {
				w := blob.NewWriter(&discardWS{})
				w.SetDedup(dedup)
				for i := range 64 {
					data[0] = byte(i)
					if _, err := w.Add(blob.Float16, data, 1<<19); err != nil {
						b.Fatal(err)
					}
				}
				if err := w.Close(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkWriterLarge streams 64 MiB in two 32 MiB blobs, the size of a
// 1B-shaped model's packed FFN indices, with de-duplication.
func BenchmarkWriterLarge(b *testing.B) {
	data := make([]byte, 32<<20)
	b.SetBytes(64 << 20)
	for b.Loop() {
		w := blob.NewWriter(&discardWS{})
		for i := range 2 {
			data[0] = byte(i)
			if _, err := w.Add(blob.UInt8, data, int64(len(data))); err != nil {
				b.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReaderAll indexes a file of 4096 small blobs.
func BenchmarkReaderAll(b *testing.B) {
	var m memWS
	w := blob.NewWriter(&m)
	w.SetDedup(false)
	for range 4096 {
		if _, err := w.Add(blob.UInt6, make([]byte, 3), 4); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		r, err := blob.NewReader(bytes.NewReader(m.buf), int64(len(m.buf)))
		if err != nil {
			b.Fatal(err)
		}
		if infos, err := r.All(); err != nil || len(infos) != 4096 {
			b.Fatal(len(infos), err)
		}
	}
}
