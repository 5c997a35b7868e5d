//go:build unix

package hf

import (
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mapFile maps size bytes of f read-only. The returned release func unmaps.
func mapFile(f *os.File, size int64) ([]byte, func() error, error) {
	if int64(int(size)) != size {
		return nil, nil, fmt.Errorf("file of %d bytes is too large to map", size)
	}
	b, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, nil, fmt.Errorf("mmap: %w", err)
	}
	return b, func() error { return syscall.Munmap(b) }, nil
}

// dropPages tells the kernel the mapped pages under b are not needed now,
// so they leave this process's resident set (they stay in the page cache
// and are read again if touched). b must lie inside a mapping made by
// mapFile; the range is widened to whole pages, which stay inside the
// mapping because mappings start and end on page boundaries.
func dropPages(b []byte) {
	if len(b) == 0 {
		return
	}
	page := uintptr(os.Getpagesize())
	start := uintptr(unsafe.Pointer(&b[0]))
	lead := start & (page - 1)
	n := (lead + uintptr(len(b)) + page - 1) &^ (page - 1)
	p := unsafe.Add(unsafe.Pointer(&b[0]), -int(lead))
	_ = unix.Madvise(unsafe.Slice((*byte)(p), n), unix.MADV_DONTNEED)
}
