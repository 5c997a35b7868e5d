//go:build unix

package reference

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// dropPages tells the kernel that the memory-mapped checkpoint pages under
// b are not needed now, so they leave the resident set (they stay in the
// page cache and are read again if touched). The range is widened to whole
// pages, which stay inside the mapping: mappings start and end on page
// boundaries. b must be mapped read-only from a file (hf.Checkpoint.Raw).
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
