package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/brokerd/brokerd/config"
	"github.com/brokerd/brokerd/tpm"
)

func TestLoadErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		file string
		want []string // every substring must appear
	}{
		{"unknown top-level key", "state_dir = \"/s\"\nlisten_port = 1\n", []string{"listen_port: unknown key"}},
		{"unknown nested key", "[tpm]\nadress = \"device:/dev/tpm0\"\n", []string{"tpm.adress: unknown key"}},
		{"unknown keys with invalid values", "[tpm]\nadress = \"x\"\nqueue_depth = 0\n[api]\nmax_body = 1\n",
			[]string{"tpm.adress: unknown key", "tpm.queue_depth: 0 out of range", "api.max_body: 1 out of range"}},
		{"bad duration", "[tpm]\ncommand_timeout = \"ten\"\n", []string{`duration "ten"`}},
		{"bad toml", "state_dir = \n", []string{"brokerd.toml"}},
		{"wrong type", "[tpm]\nqueue_depth = \"many\"\n", []string{"queue_depth"}},
		{"every problem at once", "[tpm]\naddress = \"tcp:1\"\nqueue_depth = 0\nqueue_wait = \"-1s\"\nseal_pcrs = [24]\n",
			[]string{"tpm.address", "tpm.queue_depth", "tpm.queue_wait", "PCR 24"}},
		{"audit limits", "[audit]\ncheckpoint_every = 0\ncheckpoint_interval = \"10ms\"\nretention = \"5m\"\n",
			[]string{"audit.checkpoint_every: must be positive", "audit.checkpoint_interval: 10ms is shorter than a second", "audit.retention: 5m0s (want 0"}},
		{"negative retention", "[audit]\nretention = \"-1h\"\n", []string{"audit.retention: -1h0m0s"}},
		{"pacing", "[api]\nrequests_per_ip = 0.0\nrequest_burst_per_ip = 0\nmax_pause = \"0s\"\n",
			[]string{"api.requests_per_ip: must be a positive number", "api.request_burst_per_ip: must be positive", "api.max_pause: must be positive"}},
		{"pacing too long, rates not numbers", "[api]\nmax_pause = \"2m\"\nrequests_per_ip = inf\nhandshakes_per_ip = nan\n",
			[]string{"api.max_pause: 2m0s is longer than 1m0s", "api.requests_per_ip: must be a positive number", "api.handshakes_per_ip: must be a positive number"}},
		{"expiry warning", "[keys]\nexpiry_warning_days = -1\n", []string{"keys.expiry_warning_days: -1 is not 0 to 3650"}},
	}
	if !tpm.SimulatorAvailable {
		cases = append(cases, struct {
			name string
			file string
			want []string
		}{"simulator in a shipped build", "[tpm]\naddress = \"simulator\"\n", []string{"simulator is not part of this build"}})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "brokerd.toml")
			os.WriteFile(path, []byte(c.file), 0o600)
			_, err := config.Load(path)
			if err == nil {
				t.Fatal("Load succeeded")
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q spans lines", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestDefaultsAndRelativeStateDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "brokerd.toml")
	os.WriteFile(path, []byte("state_dir = \"state\"\n[tpm]\naddress = \"swtpm:/run/s\"\n"), 0o600)
	c, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.StateDir != filepath.Join(dir, "state") {
		t.Errorf("state_dir = %q", c.StateDir)
	}
	tc := c.TPMConfig()
	if tc.Address != "swtpm:/run/s" || tc.CommandTimeout != 10*time.Second || tc.QueueDepth != 128 {
		t.Errorf("tpm config = %+v", tc)
	}
}

func TestRenderRoundTrip(t *testing.T) {
	t.Parallel()
	c := config.Default()
	c.StateDir = "/var/lib/brokerd"
	c.TPM.SealPCRs = []int{7, 11}
	c.TPM.QueueWait = config.Duration{Duration: 1500 * time.Millisecond}
	path := filepath.Join(t.TempDir(), "etc", "brokerd.toml")
	if err := c.WriteNew(path); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteNew(path); err == nil {
		t.Fatal("WriteNew overwrote an existing file")
	}
	back, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if back.Keys.ExpiryWarningDays != config.DefaultExpiryWarningDays {
		t.Errorf("keys.expiry_warning_days read back as %d", back.Keys.ExpiryWarningDays)
	}
	if back.TPM.QueueWait.Duration != 1500*time.Millisecond || len(back.TPM.SealPCRs) != 2 || back.TPM.SealPCRs[1] != 11 {
		t.Fatalf("read back %+v", back.TPM)
	}
	data, _ := os.ReadFile(path)
	if !strings.Contains(string(data), "# device:/dev/tpmrm0") {
		t.Error("written file has no comments")
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640", fi.Mode().Perm())
	}
}

func TestPath(t *testing.T) {
	t.Parallel()
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	if p := config.Path("", getenv); p != config.DefaultPath {
		t.Errorf("default %q", p)
	}
	env[config.EnvPath] = "/x/b.toml"
	if p := config.Path("", getenv); p != "/x/b.toml" {
		t.Errorf("env %q", p)
	}
	if p := config.Path("/flag.toml", getenv); p != "/flag.toml" {
		t.Errorf("flag %q", p)
	}
}
