package blob_test

import (
	"errors"
	"io"
)

// memWS is an in-memory io.WriteSeeker (and io.ReaderAt) for tests.
type memWS struct {
	buf []byte
	pos int64
}

func (m *memWS) Write(p []byte) (int, error) {
	if end := m.pos + int64(len(p)); end > int64(len(m.buf)) {
		m.buf = append(m.buf, make([]byte, end-int64(len(m.buf)))...)
	}
	copy(m.buf[m.pos:], p)
	m.pos += int64(len(p))
	return len(p), nil
}

func (m *memWS) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		off += m.pos
	case io.SeekEnd:
		off += int64(len(m.buf))
	}
	if off < 0 {
		return 0, errors.New("memws: negative position")
	}
	m.pos = off
	return off, nil
}

// failWS fails every write after limit bytes.
type failWS struct {
	memWS
	limit int
}

var errDisk = errors.New("disk full")

func (f *failWS) Write(p []byte) (int, error) {
	if len(f.buf)+len(p) > f.limit {
		return 0, errDisk
	}
	return f.memWS.Write(p)
}

// rwWS is a memWS that can be read back, as an *os.File can.
type rwWS struct{ memWS }

func (r *rwWS) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(r.buf)) {
		return 0, io.EOF
	}
	n := copy(p, r.buf[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
