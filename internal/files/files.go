// Package files writes files safely. Write is for the files the command
// line hands to its user (certificates, keys, CSRs), without the traps of
// os.WriteFile: a symlink in place of the file is not followed, an
// existing file gets the mode asked for rather than keeping its own, and a
// secret never replaces a file that exists. Replace is for the files the
// daemon reads while it runs: it never sees half of one.
package files

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Write writes data to path with mode perm. With exclusive, an existing
// path is an error (for private keys: two names must not share a file,
// and an old key is not silently replaced).
func Write(path string, data []byte, perm fs.FileMode, exclusive bool) error {
	flags := os.O_WRONLY | os.O_CREATE | os.O_TRUNC | syscall.O_NOFOLLOW
	if exclusive {
		flags = os.O_WRONLY | os.O_CREATE | os.O_EXCL | syscall.O_NOFOLLOW
	}
	f, err := os.OpenFile(path, flags, perm)
	if errors.Is(err, syscall.ELOOP) {
		return fmt.Errorf("open %s: it is a symbolic link: refusing to write through it", path)
	}
	if exclusive && errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s exists: refusing to replace it (remove it, or write elsewhere)", path)
	}
	if err != nil {
		return err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Replace puts data at path atomically: written to a temporary file in the
// same directory, synced, given mode perm and renamed over path, so that
// a reader (the daemon watching the file) sees the old content or the new,
// never half of it.
func Replace(path string, data []byte, perm fs.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
