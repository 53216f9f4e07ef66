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

// Writable checks, without writing, that Write can write path: that its
// directory exists and this process may create files in it, and that path
// is no directory. Its errors say which of these fails.
func Writable(path string) error {
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("cannot write %s: directory %s does not exist", path, dir)
	case err != nil:
		return fmt.Errorf("cannot write %s: %w", path, err)
	case !fi.IsDir():
		return fmt.Errorf("cannot write %s: %s is not a directory", path, dir)
	}
	if err := syscall.Access(dir, 2 /* W_OK */); err != nil {
		return fmt.Errorf("cannot write %s: directory %s: %w", path, dir, err)
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return fmt.Errorf("cannot write %s: it is a directory", path)
	}
	return nil
}

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

// Replace puts data at path atomically and durably: written to a
// temporary file in the same directory, given mode perm, synced, renamed
// over path, and the directory synced, so that a reader (the daemon
// watching the file) sees the old content or the new, never half of it,
// and a power cut leaves the old file or the new one, never none.
func Replace(path string, data []byte, perm fs.FileMode) error {
	return replace(osFS{}, path, data, perm)
}

// replaceFS is what Replace does to the file system, step by step; tests
// record the steps and inject failures.
type replaceFS interface {
	CreateTemp(dir, pattern string) (tempFile, error)
	Rename(from, to string) error
	Remove(path string) error
	// SyncDir makes the directory's entries (a rename) durable.
	SyncDir(dir string) error
}

// tempFile is the part of *os.File that Replace uses.
type tempFile interface {
	Name() string
	Write(p []byte) (int, error)
	Chmod(mode fs.FileMode) error
	Sync() error
	Close() error
}

type osFS struct{}

func (osFS) CreateTemp(dir, pattern string) (tempFile, error) { return os.CreateTemp(dir, pattern) }
func (osFS) Rename(from, to string) error                     { return os.Rename(from, to) }
func (osFS) Remove(path string) error                         { return os.Remove(path) }

func (osFS) SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	if err := d.Sync(); err != nil {
		d.Close()
		return err
	}
	return d.Close()
}

func replace(fsys replaceFS, path string, data []byte, perm fs.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := fsys.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	renamed := false
	defer func() {
		if !renamed {
			fsys.Remove(tmp.Name())
		}
	}()
	if err := writeSynced(tmp, data, perm); err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	if err := fsys.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	renamed = true
	if err := fsys.SyncDir(dir); err != nil {
		return fmt.Errorf("replace %s: the new file is in place but may not survive a power cut: sync %s: %w", path, dir, err)
	}
	return nil
}

// writeSynced writes data to f, sets its mode, syncs and closes it.
func writeSynced(f tempFile, data []byte, perm fs.FileMode) error {
	_, err := f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
