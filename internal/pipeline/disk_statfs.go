//go:build linux || darwin

package pipeline

import "golang.org/x/sys/unix"

// diskFree returns the bytes available to this user on dir's file system.
func diskFree(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return -1, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}
