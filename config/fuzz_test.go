package config_test

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/brokerd/brokerd/config"
)

// FuzzLoad: any configuration file either loads into a configuration
// whose parts the packages accept (Validate passes, the TPM configuration
// validates, the rendered file loads back the same) or is refused with an
// error; never a panic.
func FuzzLoad(f *testing.F) {
	rendered, err := config.Default().Render()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(rendered)
	f.Add([]byte("state_dir = \"/var/lib/brokerd\"\n[tpm]\naddress = \"swtpm:/run/swtpm.sock\"\nqueue_wait = \"-1s\"\n"))
	f.Add([]byte("[api]\nlisten = [\"127.0.0.1:8443\"]\nmax_body = 0\n[bank]\ncredential_headers = []\n"))
	f.Add([]byte("[audit]\nmin_free = 1\ndenial_quota = -5\n[metrics]\nlisten = [\"[::1]:9180\"]\n"))
	f.Add([]byte("bogus = 1\n[tpm\n"))
	f.Add([]byte("[api]\nrequests_per_ip = 50.5\nrequest_burst_per_ip = 7\nmax_pause = \"2s\"\nhandshakes_per_ip = nan\n"))
	f.Add([]byte("[api]\nrequests_per_ip = 50.5\nrequest_burst_per_ip = 7\nmax_pause = \"2s\"\n"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "brokerd.toml")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := config.Load(path)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Load accepted what Validate refuses: %v", err)
		}
		if err := c.TPMConfig().Validate(); err != nil {
			t.Fatalf("a loaded configuration gives an invalid TPM configuration: %v", err)
		}
		c.Logger(io.Discard)
		again, err := c.Render()
		if err != nil {
			t.Fatalf("render: %v", err)
		}
		if err := os.WriteFile(path, again, 0o600); err != nil {
			t.Fatal(err)
		}
		c2, err := config.Load(path)
		if err != nil {
			t.Fatalf("a rendered configuration does not load: %v\n%s", err, again)
		}
		if again2, _ := c2.Render(); !bytes.Equal(again, again2) {
			t.Fatalf("a rendered configuration reads back otherwise:\n%s\n---\n%s", again, again2)
		}
	})
}
