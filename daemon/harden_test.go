package daemon

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/brokerd/brokerd/config"
	"github.com/brokerd/brokerd/internal/swtpmtest"
	"github.com/brokerd/brokerd/keys"
)

// TestHarden: the daemon's process is not dumpable, and with a sealed key
// in memory its memory is locked.
func TestHarden(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("locking all memory needs CAP_IPC_LOCK or a large RLIMIT_MEMLOCK; make test runs as root")
	}
	sw := swtpmtest.Start(t)
	dir := t.TempDir()
	cfg := config.Default()
	cfg.TPM.Address, cfg.StateDir = sw.Address(), filepath.Join(dir, "state")
	cfg.API.TLSCert, cfg.API.ClientCA = filepath.Join(dir, "tls", "server.crt"), filepath.Join(dir, "tls", "client-ca.pem")
	s, err := OpenState(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pemData, err := os.ReadFile("../testdata/reference/example.key") // RSA-4096: sealed on swtpm
	if err != nil {
		t.Fatal(err)
	}
	priv, err := keys.ParsePrivateKeyPEM(pemData, nil)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := s.Keys.Import(context.Background(), "big.key", priv, keys.ImportOptions{}); err != nil || info.Kind != keys.KindSealed {
		t.Fatalf("import: %+v %v", info, err)
	}
	t.Cleanup(func() {
		unix.Munlockall()
		unix.Prctl(unix.PR_SET_DUMPABLE, 1, 0, 0, 0)
	})
	d := &Daemon{cfg: cfg, state: s, log: slog.New(slog.DiscardHandler)}
	if err := d.harden(context.Background()); err != nil {
		t.Fatal(err)
	}
	if v, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0); err != nil || v != 0 {
		t.Fatalf("dumpable = %d, %v", v, err)
	}
	if locked := vmLocked(t); locked == 0 {
		t.Fatal("no memory locked with a sealed key in it")
	}
}

// vmLocked reads VmLck (kB) of this process.
func vmLocked(t *testing.T) int {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmLck:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	t.Fatal("no VmLck in /proc/self/status")
	return 0
}
