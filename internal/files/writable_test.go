package files_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/brokerd/brokerd/internal/files"
)

func TestWritable(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ro := filepath.Join(dir, "ro")
	os.Mkdir(ro, 0o500)
	plain := filepath.Join(dir, "plain")
	os.WriteFile(plain, nil, 0o600)
	cases := map[string]string{
		filepath.Join(dir, "new.crt"):       "",
		plain:                               "",
		filepath.Join(dir, "none", "x.crt"): "directory " + filepath.Join(dir, "none") + " does not exist",
		filepath.Join(plain, "x.crt"):       plain + " is not a directory",
		ro:                                  "it is a directory",
	}
	if os.Getuid() != 0 { // root may write anywhere
		cases[filepath.Join(ro, "x.crt")] = "permission denied"
	}
	for path, want := range cases {
		err := files.Writable(path)
		if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want) || !strings.HasPrefix(err.Error(), "cannot write "+path+": ")) {
			t.Errorf("Writable(%s) = %v, want %q", path, err, want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "new.crt")); !os.IsNotExist(err) {
		t.Error("Writable wrote a file")
	}
}
