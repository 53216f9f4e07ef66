package files_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/brokerd/brokerd/internal/files"
)

func TestWrite(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := filepath.Join(dir, "a.crt")
	os.WriteFile(p, []byte("old content, longer"), 0o666)
	os.Chmod(p, 0o666)
	if err := files.Write(p, []byte("new"), 0o644, false); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(p); string(got) != "new" {
		t.Fatalf("content %q", got)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o644 {
		t.Fatalf("an existing file kept its mode %v", fi.Mode().Perm())
	}
	if err := files.Write(p, []byte("secret"), 0o600, true); err == nil || !strings.Contains(err.Error(), "exists: refusing to replace it") {
		t.Fatalf("exclusive over an existing file: %v", err)
	}
	target := filepath.Join(dir, "target")
	os.WriteFile(target, []byte("keep"), 0o644)
	link := filepath.Join(dir, "link.key")
	os.Symlink(target, link)
	for _, excl := range []bool{false, true} {
		if err := files.Write(link, []byte("secret"), 0o600, excl); err == nil {
			t.Fatalf("wrote through a symlink (exclusive %v)", excl)
		}
	}
	if got, _ := os.ReadFile(target); string(got) != "keep" {
		t.Fatal("the symlink's target changed")
	}
	k := filepath.Join(dir, "new.key")
	if err := files.Write(k, []byte("secret"), 0o600, true); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(k); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode().Perm())
	}
	if err := files.Write(filepath.Join(dir, "missing", "x"), nil, 0o644, false); err == nil {
		t.Fatal("wrote into a missing directory")
	}
}

func TestReplace(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := filepath.Join(dir, "policy.toml")
	os.WriteFile(p, []byte("old"), 0o600)
	if err := files.Replace(p, []byte("new"), 0o640); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(p); string(got) != "new" {
		t.Fatalf("content %q", got)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v", fi.Mode().Perm())
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
	if err := files.Replace(filepath.Join(dir, "missing", "x"), nil, 0o644); err == nil {
		t.Fatal("replaced a file in a missing directory")
	}
}
