package files

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// recordingFS runs Replace's steps on the real file system, records them,
// and fails the step named in failAt.
type recordingFS struct {
	steps  []string
	failAt string
}

func (r *recordingFS) step(name string) error {
	r.steps = append(r.steps, name)
	if name == r.failAt {
		return errors.New("injected failure at " + name)
	}
	return nil
}

func (r *recordingFS) CreateTemp(dir, pattern string) (tempFile, error) {
	if err := r.step("create temp in " + filepath.Base(dir)); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return nil, err
	}
	return &recordingFile{File: f, r: r}, nil
}

func (r *recordingFS) Rename(from, to string) error {
	if err := r.step("rename over " + filepath.Base(to)); err != nil {
		return err
	}
	return os.Rename(from, to)
}

func (r *recordingFS) Remove(path string) error {
	r.steps = append(r.steps, "remove temp")
	return os.Remove(path)
}

func (r *recordingFS) SyncDir(dir string) error {
	if err := r.step("sync dir " + filepath.Base(dir)); err != nil {
		return err
	}
	return osFS{}.SyncDir(dir)
}

type recordingFile struct {
	*os.File
	r *recordingFS
}

func (f *recordingFile) Write(p []byte) (int, error) {
	if err := f.r.step("write"); err != nil {
		return 0, err
	}
	return f.File.Write(p)
}

func (f *recordingFile) Chmod(m fs.FileMode) error {
	if err := f.r.step("chmod"); err != nil {
		return err
	}
	return f.File.Chmod(m)
}

func (f *recordingFile) Sync() error {
	if err := f.r.step("sync file"); err != nil {
		return err
	}
	return f.File.Sync()
}

func (f *recordingFile) Close() error {
	f.r.steps = append(f.r.steps, "close file")
	return f.File.Close()
}

// TestReplaceSteps: the file is written, synced and closed before the
// rename, and the directory is synced after it; a failure before the
// rename leaves the old file and no temporary file, and a failed
// directory sync is reported.
func TestReplaceSteps(t *testing.T) {
	t.Parallel()
	all := []string{"create temp in d", "write", "chmod", "sync file", "close file", "rename over crl.pem", "sync dir d"}
	cases := []struct {
		failAt  string
		want    []string
		content string // at path afterwards
		errPart string
	}{
		{"", all, "new", ""},
		{"write", []string{"create temp in d", "write", "close file", "remove temp"}, "old", "injected failure at write"},
		{"sync file", []string{"create temp in d", "write", "chmod", "sync file", "close file", "remove temp"}, "old", "injected failure at sync file"},
		{"rename over crl.pem", append(all[:6:6], "remove temp"), "old", "injected failure at rename"},
		{"sync dir d", all, "new", "may not survive a power cut"},
	}
	for _, c := range cases {
		t.Run("fail at "+c.failAt, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "d")
			os.Mkdir(dir, 0o755)
			path := filepath.Join(dir, "crl.pem")
			os.WriteFile(path, []byte("old"), 0o644)
			r := &recordingFS{failAt: c.failAt}
			err := replace(r, path, []byte("new"), 0o640)
			if (err == nil) != (c.errPart == "") || (err != nil && !strings.Contains(err.Error(), c.errPart)) {
				t.Fatalf("error %v, want one with %q", err, c.errPart)
			}
			if !reflect.DeepEqual(r.steps, c.want) {
				t.Fatalf("steps\n%q\nwant\n%q", r.steps, c.want)
			}
			if got, _ := os.ReadFile(path); string(got) != c.content {
				t.Fatalf("content %q, want %q", got, c.content)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 1 {
				t.Fatalf("%d entries left in the directory", len(entries))
			}
		})
	}
	// The real thing: mode and content.
	path := filepath.Join(t.TempDir(), "server.crt")
	if err := Replace(path, []byte("cert"), 0o644); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("stat %v %v", fi, err)
	}
}
