package blob

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"math"
)

// ErrClosed is returned by Add and Close on a closed Writer.
var ErrClosed = errors.New("blob: writer is closed")

// dedupKey identifies a blob's content. For a blob of at most
// sampleFrom bytes, or when the written file cannot be read back, h1 and
// h2 are two independently seeded maphash values of all of it, and equal
// keys are taken as equal data (the chance that two different blobs of a
// package collide is about 2⁻¹²⁸ per pair). For a larger blob they hash
// only samples of it (sampleWindows windows of sampleWidth bytes spread
// over the data, and its ends), which costs next to nothing against
// writing it, and equal keys only make the blobs candidates: the earlier
// one is read back and compared byte for byte. The seeds differ between
// processes, but the output depends only on which blobs are equal, so it
// does not.
type dedupKey struct {
	dtype   DType
	padBits int
	size    int64
	sampled bool
	h1, h2  uint64
}

var dedupSeed1, dedupSeed2 = maphash.MakeSeed(), maphash.MakeSeed()

const (
	// sampleFrom is the blob size above which keys hash samples.
	sampleFrom = 256 << 10
	// sampleWindows windows of sampleWidth bytes are hashed.
	sampleWindows, sampleWidth = 64, 64
)

// key returns data's de-duplication key, sampled if allowed and large.
func key(dtype DType, padBits int, data []byte, sample bool) dedupKey {
	k := dedupKey{dtype: dtype, padBits: padBits, size: int64(len(data))}
	if !sample || len(data) <= sampleFrom {
		k.h1, k.h2 = maphash.Bytes(dedupSeed1, data), maphash.Bytes(dedupSeed2, data)
		return k
	}
	k.sampled = true
	var h maphash.Hash
	h.SetSeed(dedupSeed1)
	step := (len(data) - sampleWidth) / (sampleWindows - 1)
	for i := range sampleWindows {
		h.Write(data[i*step : i*step+sampleWidth])
	}
	h.Write(data[len(data)-sampleWidth:])
	k.h1 = h.Sum64()
	return k
}

// Writer streams blobs into a weight.bin laid out exactly as Apple's MILBlob
// StorageWriter lays it out. Data is written through a buffer as each Add
// happens and is not retained, so arbitrarily large weights stream through
// with constant memory (plus about 64 bytes per distinct blob, and a 1 MiB
// read-back buffer, for de-duplication).
//
// The Writer takes an io.WriteSeeker because the header, which holds the
// blob count, is patched at Close. The file starts at the seeker's position
// when NewWriter is called; offsets are relative to that position.
//
// After an I/O error every later call returns that error (sticky error).
// Invalid arguments to Add return an error but leave the Writer usable.
type Writer struct {
	ws    io.WriteSeeker
	bw    *bufio.Writer
	base  int64  // seeker position of the header
	pos   uint64 // bytes written so far, relative to base
	count uint64 // blobs written
	dedup bool
	seen  map[dedupKey]uint64
	// back reads the written file for sampled keys (nil: full hashes);
	// more lists further blobs with the same sampled key but other data.
	back io.ReaderAt
	more map[dedupKey][]uint64
	cmp  []byte // read-back buffer
	err  error
	done bool
	meta [MetadataSize]byte
}

// NewWriter starts a weight.bin at w's current position and writes the
// header placeholder. De-duplication is on: adding the same dtype and bytes
// twice returns the first offset and stores the blob once. If w is also an
// io.ReaderAt (an *os.File opened for writing is), large blobs are
// de-duplicated by sampling and an exact comparison with the data written
// (see dedupKey).
func NewWriter(w io.WriteSeeker) *Writer {
	bw := &Writer{ws: w, bw: bufio.NewWriterSize(w, 1<<20), dedup: true, seen: make(map[dedupKey]uint64)}
	if r, ok := w.(io.ReaderAt); ok {
		bw.back, bw.more = r, make(map[dedupKey][]uint64)
	}
	base, err := w.Seek(0, io.SeekCurrent)
	if err != nil {
		bw.err = fmt.Errorf("blob: find start position: %w", err)
		return bw
	}
	bw.base = base
	bw.write(zeros[:HeaderSize])
	return bw
}

var zeros [Alignment]byte

// SetDedup turns content de-duplication on or off for later Adds. With it
// off every Add stores a new blob, as Apple's StorageWriter does (coremltools
// shares identical constants before they reach the writer).
func (w *Writer) SetDedup(on bool) { w.dedup = on }

// Count returns the number of distinct blobs stored so far.
func (w *Writer) Count() int { return int(w.count) }

// Size returns the file size so far in bytes (the end of the last blob).
func (w *Writer) Size() int64 { return int64(w.pos) }

func (w *Writer) write(p []byte) {
	if w.err != nil {
		return
	}
	n, err := w.bw.Write(p)
	w.pos += uint64(n)
	if err != nil {
		w.err = fmt.Errorf("blob: write: %w", err)
	}
}

// Add stores numElements elements of dtype whose packed bytes are data and
// returns the offset of the blob's metadata record, the value a program's
// BlobFileValue.offset holds. len(data) must be ceil(numElements·bits/8);
// sub-byte elements are packed LSB-first (element i at bits [i·b, i·b+b)).
// data is not retained after Add returns.
func (w *Writer) Add(dtype DType, data []byte, numElements int64) (offset uint64, err error) {
	if w.done {
		return 0, ErrClosed
	}
	if w.err != nil {
		return 0, w.err
	}
	if !dtype.Valid() {
		return 0, fmt.Errorf("blob: add: unknown dtype %d", uint32(dtype))
	}
	size, padBits, ok := dtype.PackedSize(numElements)
	if !ok {
		return 0, fmt.Errorf("blob: add %v: invalid element count %d", dtype, numElements)
	}
	if int64(len(data)) != size {
		return 0, fmt.Errorf("blob: add %v: %d elements need %d bytes, got %d", dtype, numElements, size, len(data))
	}
	var k dedupKey
	if w.dedup {
		k = key(dtype, padBits, data, w.back != nil)
		if off, ok := w.seen[k]; ok {
			if !k.sampled {
				return off, nil
			}
			for _, off := range append([]uint64{off}, w.more[k]...) {
				same, err := w.written(off, data)
				if err != nil {
					return 0, err
				}
				if same {
					return off, nil
				}
			}
		}
	}
	if w.count >= math.MaxUint32 {
		return 0, fmt.Errorf("blob: add: more than %d blobs", uint32(math.MaxUint32))
	}
	meta, ok := align64(w.pos)
	if !ok || meta > math.MaxInt64-MetadataSize-uint64(size) {
		return 0, fmt.Errorf("blob: add %v: file would exceed %d bytes", dtype, int64(math.MaxInt64))
	}
	w.write(zeros[:meta-w.pos])
	putMetadata(w.meta[:], dtype, uint64(size), meta+MetadataSize, uint64(padBits))
	w.write(w.meta[:])
	w.write(data)
	if w.err != nil {
		return 0, w.err
	}
	w.count++
	if w.dedup {
		if _, ok := w.seen[k]; ok {
			w.more[k] = append(w.more[k], meta)
		} else {
			w.seen[k] = meta
		}
	}
	return meta, nil
}

// written reports whether the blob whose metadata is at offset meta holds
// data, reading it back from the file.
func (w *Writer) written(meta uint64, data []byte) (bool, error) {
	if err := w.bw.Flush(); err != nil {
		w.err = fmt.Errorf("blob: flush: %w", err)
		return false, w.err
	}
	const chunk = 1 << 20
	if w.cmp == nil {
		w.cmp = make([]byte, chunk)
	}
	at := w.base + int64(meta) + MetadataSize
	for len(data) > 0 {
		n := min(len(data), chunk)
		if _, err := w.back.ReadAt(w.cmp[:n], at); err != nil {
			w.err = fmt.Errorf("blob: read back for de-duplication: %w", err)
			return false, w.err
		}
		if !bytes.Equal(w.cmp[:n], data[:n]) {
			return false, nil
		}
		data, at = data[n:], at+int64(n)
	}
	return true, nil
}

// Close flushes the buffered data, writes the blob count and version into
// the header and leaves w positioned at the end of the file. It does not
// close the underlying writer. A Writer with no blobs produces a valid
// 64-byte file.
func (w *Writer) Close() error {
	if w.done {
		return ErrClosed
	}
	w.done = true
	w.seen, w.more, w.cmp = nil, nil, nil
	if w.err != nil {
		return w.err
	}
	if err := w.bw.Flush(); err != nil {
		w.err = fmt.Errorf("blob: flush: %w", err)
		return w.err
	}
	var hdr [HeaderSize]byte
	putHeader(hdr[:], uint32(w.count))
	if _, err := w.ws.Seek(w.base, io.SeekStart); err != nil {
		w.err = fmt.Errorf("blob: seek to header: %w", err)
		return w.err
	}
	if _, err := w.ws.Write(hdr[:8]); err != nil {
		w.err = fmt.Errorf("blob: write header: %w", err)
		return w.err
	}
	if _, err := w.ws.Seek(w.base+int64(w.pos), io.SeekStart); err != nil {
		w.err = fmt.Errorf("blob: seek to end: %w", err)
		return w.err
	}
	return nil
}
