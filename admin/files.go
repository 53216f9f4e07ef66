package admin

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/brokerd/brokerd/internal/files"
)

// FS is where a command's files are: this process's (LocalFS), or the
// caller's when the command runs inside the daemon (a Session).
type FS interface {
	ReadFile(path string) ([]byte, error)
	// WriteFile writes a file, not through a symbolic link; an existing
	// file gets mode perm.
	WriteFile(path string, data []byte, perm os.FileMode) error
	// CreateFile writes a file that must not exist (private keys).
	CreateFile(path string, data []byte, perm os.FileMode) error
	MkdirAll(path string, perm os.FileMode) error
	// Writable checks, without writing, that WriteFile can write path
	// (see files.Writable).
	Writable(path string) error
}

var (
	_ FS = LocalFS{}
	_ FS = (*Session)(nil)
)

// LocalFS is this process's file system.
type LocalFS struct{}

// ReadFile reads path.
func (LocalFS) ReadFile(path string) ([]byte, error) { return os.ReadFile(path) }

// WriteFile writes path, not through a symbolic link, with mode perm.
func (LocalFS) WriteFile(path string, data []byte, perm os.FileMode) error {
	return files.Write(path, data, perm, false)
}

// CreateFile writes path, which must not exist, with mode perm.
func (LocalFS) CreateFile(path string, data []byte, perm os.FileMode) error {
	return files.Write(path, data, perm, true)
}

// MkdirAll creates path and its parents.
func (LocalFS) MkdirAll(path string, perm os.FileMode) error { return os.MkdirAll(path, perm) }

// Writable checks that WriteFile can write path.
func (LocalFS) Writable(path string) error { return files.Writable(path) }

// Access is what a command may do with one of the caller's paths.
type Access int

// Accesses a Grant gives.
const (
	// Read: read the file.
	Read Access = iota + 1
	// Write: write (or create) the file.
	Write
	// Dir: create the directory, and write files directly in it.
	Dir
)

// Grant lets the daemon touch one of the caller's paths for a command.
type Grant struct {
	Path   string
	Access Access
}

// PathFlag is a flag.Value naming one of the caller's files. When a
// command runs inside the daemon, the paths its parsed PathFlags name are
// the only files of the caller's that the daemon may touch (see Allow),
// with the access each flag declares.
type PathFlag struct {
	// Value receives the path.
	Value *string
	// Access is what the command does with the file.
	Access Access
	// Grants collects one Grant per path set.
	Grants *[]Grant
}

// String returns the path.
func (p PathFlag) String() string {
	if p.Value == nil {
		return ""
	}
	return *p.Value
}

// Set sets the path and grants the access to it.
func (p PathFlag) Set(v string) error {
	*p.Value = v
	if v != "" {
		*p.Grants = append(*p.Grants, Grant{Path: filepath.Clean(v), Access: p.Access})
	}
	return nil
}

// Allow returns a Local.Allow that lets the daemon do only what grants
// give: the command line's parsed file flags, never anything else of the
// caller's account.
func Allow(grants []Grant) func(op, path string) error {
	return func(op, path string) error {
		p := filepath.Clean(path)
		for _, g := range grants {
			gp := filepath.Clean(g.Path)
			ok := false
			switch g.Access {
			case Read:
				ok = op == "read" && p == gp
			case Write:
				ok = op == "write" && p == gp
			case Dir:
				ok = (op == "mkdir" && p == gp) || (op == "write" && filepath.Dir(p) == gp)
			}
			if ok {
				return nil
			}
		}
		return fmt.Errorf("the daemon asked to %s %s, which the command line does not name: refused", op, path)
	}
}
