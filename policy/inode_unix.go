package policy

import (
	"os"
	"syscall"
)

// inode returns the file's inode, so that a file replaced by rename with
// the same size and time is still seen as changed.
func inode(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}
