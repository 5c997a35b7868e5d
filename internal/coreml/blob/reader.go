package blob

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// Reader gives random access to the blobs of a weight.bin. It is safe for
// concurrent use if the underlying io.ReaderAt is.
type Reader struct {
	r     io.ReaderAt
	size  uint64
	count uint32
}

// NewReader reads and validates the header of the weight.bin held in r,
// which is size bytes long: the file must hold a full header, version 2,
// and a blob count that fits the file (each blob needs a 64-byte record).
// The header's reserved bytes are not checked (Apple's writer zeroes them,
// but nothing documents readers rejecting other values).
func NewReader(r io.ReaderAt, size int64) (*Reader, error) {
	if size < HeaderSize {
		return nil, formatErr(0, "file is %d bytes, shorter than the %d-byte header", size, HeaderSize)
	}
	var hdr [HeaderSize]byte
	if err := readAt(r, hdr[:], 0); err != nil {
		return nil, fmt.Errorf("blob: read header: %w", err)
	}
	count := binary.LittleEndian.Uint32(hdr[0:])
	if v := binary.LittleEndian.Uint32(hdr[4:]); v != Version {
		return nil, formatErr(4, "storage version %d, want %d", v, Version)
	}
	if uint64(count) > (uint64(size)-HeaderSize)/MetadataSize {
		return nil, formatErr(0, "blob count %d does not fit in %d bytes", count, size)
	}
	return &Reader{r: r, size: uint64(size), count: count}, nil
}

// readAt fills p from r at off, turning a short read into
// io.ErrUnexpectedEOF.
func readAt(r io.ReaderAt, p []byte, off uint64) error {
	n, err := r.ReadAt(p, int64(off))
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// Count returns the blob count recorded in the header.
func (r *Reader) Count() int { return int(r.count) }

// Size returns the file size given to NewReader.
func (r *Reader) Size() int64 { return int64(r.size) }

// Blob reads and validates the metadata record at offset (a BlobFileValue
// offset): it must be 64-aligned, past the header and inside the file, and
// hold the sentinel, a known dtype, data offset = offset + 64, data inside
// the file, padding bits consistent with the dtype and size, and zero
// reserved fields.
func (r *Reader) Blob(offset uint64) (Info, error) {
	if offset < HeaderSize || offset%Alignment != 0 {
		return Info{}, formatErr(offset, "blob offset %d is not a 64-aligned offset past the header", offset)
	}
	if offset > r.size || r.size-offset < MetadataSize {
		return Info{}, formatErr(offset, "blob offset %d: metadata record past end of %d-byte file", offset, r.size)
	}
	var m [MetadataSize]byte
	if err := readAt(r.r, m[:], offset); err != nil {
		return Info{}, fmt.Errorf("blob: read metadata at offset %d: %w", offset, err)
	}
	if s := binary.LittleEndian.Uint32(m[0:]); s != Sentinel {
		return Info{}, formatErr(offset, "sentinel %#08x, want %#08x", s, uint32(Sentinel))
	}
	info := Info{
		Offset:     offset,
		DType:      DType(binary.LittleEndian.Uint32(m[4:])),
		Size:       binary.LittleEndian.Uint64(m[8:]),
		DataOffset: binary.LittleEndian.Uint64(m[16:]),
		PadBits:    binary.LittleEndian.Uint64(m[24:]),
	}
	if !info.DType.Valid() {
		return Info{}, formatErr(offset+4, "unknown dtype %d", uint32(info.DType))
	}
	if info.DataOffset != offset+MetadataSize {
		return Info{}, formatErr(offset+16, "data offset %d, want %d", info.DataOffset, offset+MetadataSize)
	}
	if info.Size > r.size-info.DataOffset {
		return Info{}, formatErr(offset+8, "%d data bytes at offset %d run past end of %d-byte file", info.Size, info.DataOffset, r.size)
	}
	for i := 32; i < MetadataSize; i += 8 {
		if v := binary.LittleEndian.Uint64(m[i:]); v != 0 {
			return Info{}, formatErr(offset+uint64(i), "reserved field is %#x, want 0", v)
		}
	}
	n, err := elements(info.DType, info.Size, info.PadBits)
	if err != "" {
		return Info{}, formatErr(offset+24, "%v blob of %d bytes: %s", info.DType, info.Size, err)
	}
	info.Elements = n
	return info, nil
}

// elements derives the element count from a blob's dtype, byte size and
// padding bits, or says why they are inconsistent.
func elements(dt DType, size, padBits uint64) (int64, string) {
	bits := uint64(dt.Bits())
	if bits >= 8 {
		if padBits != 0 {
			return 0, fmt.Sprintf("padding bits %d on a byte-sized type", padBits)
		}
		w := bits / 8
		if size%w != 0 {
			return 0, fmt.Sprintf("size is not a multiple of the %d-byte element", w)
		}
		return int64(size / w), ""
	}
	if padBits >= 8 || (size == 0 && padBits != 0) {
		return 0, fmt.Sprintf("padding bits %d out of range", padBits)
	}
	// total bits = size·8 − padBits, computed without overflow as
	// q·bits·8 + (r·8 − padBits) with size = q·bits + r.
	q, rem := size/bits, size%bits
	tail := int64(rem*8) - int64(padBits)
	if tail%int64(bits) != 0 {
		return 0, fmt.Sprintf("padding bits %d leave a partial %d-bit element", padBits, bits)
	}
	if q > (1<<63-1)/8-1 {
		return 0, "element count overflows int64"
	}
	return int64(q*8) + tail/int64(bits), ""
}

// Section returns a reader over the blob's data bytes and its Info, for
// streaming large blobs without loading them.
func (r *Reader) Section(offset uint64) (*io.SectionReader, Info, error) {
	info, err := r.Blob(offset)
	if err != nil {
		return nil, Info{}, err
	}
	return io.NewSectionReader(r.r, int64(info.DataOffset), int64(info.Size)), info, nil
}

// maxChunk bounds each read call.
const maxChunk = 64 << 20

// Data returns a copy of the data bytes of the blob at offset.
func (r *Reader) Data(offset uint64) ([]byte, error) {
	info, err := r.Blob(offset)
	if err != nil {
		return nil, err
	}
	return r.DataOf(info)
}

// DataOf returns a copy of the data bytes of a blob whose record Blob has
// already read and validated (its data lies inside the file), in one
// allocation.
func (r *Reader) DataOf(info Info) ([]byte, error) {
	if info.DataOffset+info.Size > r.size || info.DataOffset+info.Size < info.DataOffset {
		return nil, formatErr(info.DataOffset, "blob data of %d bytes runs past the end of the file", info.Size)
	}
	buf := make([]byte, info.Size)
	for done := uint64(0); done < info.Size; {
		n := min(info.Size-done, maxChunk)
		if err := readAt(r.r, buf[done:done+n], info.DataOffset+done); err != nil {
			return nil, fmt.Errorf("blob: read %d data bytes at offset %d: %w", info.Size, info.DataOffset, err)
		}
		done += n
	}
	return buf, nil
}

// All walks the file from the first record (offset 64), each next record at
// the 64-aligned end of the previous blob's data, validating every record,
// that the header count matches and that the file ends exactly after the
// last blob. Gap bytes are not checked.
func (r *Reader) All() ([]Info, error) {
	infos := make([]Info, 0, min(r.count, 1024))
	pos := uint64(HeaderSize)
	for i := range r.count {
		off, ok := align64(pos)
		if !ok || off >= r.size {
			return nil, formatErr(pos, "header says %d blobs, file ends after %d", r.count, i)
		}
		info, err := r.Blob(off)
		if err != nil {
			return nil, fmt.Errorf("blob %d: %w", i, err)
		}
		infos = append(infos, info)
		pos = info.End()
	}
	if pos != r.size {
		return nil, formatErr(pos, "%d trailing bytes after the last of %d blobs", r.size-pos, r.count)
	}
	return infos, nil
}

// File is a Reader over an open weight.bin file.
type File struct {
	*Reader
	f *os.File
}

// Open opens the weight.bin at path and validates its header.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("blob: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("blob: %w", err)
	}
	r, err := NewReader(f, st.Size())
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("blob: open %s: %w", path, err)
	}
	return &File{Reader: r, f: f}, nil
}

// Close closes the file.
func (f *File) Close() error { return f.f.Close() }
