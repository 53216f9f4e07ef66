package daemon_test

import (
	"bytes"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/brokerd/brokerd/config"
	"github.com/brokerd/brokerd/daemon"
	"github.com/brokerd/brokerd/internal/swtpmtest"
	"github.com/brokerd/brokerd/internal/testpki"
	"github.com/brokerd/brokerd/keys"
	"github.com/brokerd/brokerd/tpm"
)

// initOn initialises a state in a directory of its own on the TPM at
// address and returns its configuration and what Init logged.
func initOn(t *testing.T, address string) (*config.Config, string) {
	t.Helper()
	cfg, logs, _ := initReport(t, address)
	return cfg, logs
}

// initReport is initOn that also returns Init's report.
func initReport(t *testing.T, address string) (*config.Config, string, daemon.InitReport) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "etc", "brokerd.toml")
	cfg := config.Default()
	cfg.TPM.Address, cfg.StateDir = address, filepath.Join(dir, "state")
	cfg.Admin.Socket, cfg.PKI.ServerNames = filepath.Join(dir, "admin.sock"), []string{"localhost"}
	var logs bytes.Buffer
	rep, err := daemon.Init(ctx, path, cfg, nil, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if cfg, err = config.Load(path); err != nil {
		t.Fatal(err)
	}
	return cfg, logs.String(), rep
}

// TestInitPersistsTheSRK: the first init on a TPM makes the storage root
// key persistent and says so; the next finds it so, and both bind their
// state to the same key.
func TestInitPersistsTheSRK(t *testing.T) {
	sw := swtpmtest.Start(t)
	_, _, first := initReport(t, sw.Address())
	_, _, second := initReport(t, sw.Address())
	for _, c := range []struct {
		rep  daemon.InitReport
		want tpm.SRKPersistence
	}{{first, tpm.SRKMadePersistent}, {second, tpm.SRKPersistent}} {
		if c.rep.SRKPersistence != c.want.String() {
			t.Errorf("init says %q, want %q", c.rep.SRKPersistence, c.want)
		}
	}
	if string(first.SRK) != string(second.SRK) {
		t.Error("the storage root key's Name changed once persistent")
	}
}

// TestInitGuardsTheLockoutHierarchy: init gives an empty lockout hierarchy
// an auth value kept in the state; a second init on the same TPM leaves
// the value it does not know alone, and says so.
func TestInitGuardsTheLockoutHierarchy(t *testing.T) {
	sw := swtpmtest.Start(t)
	cfg, logs := initOn(t, sw.Address())
	if strings.Contains(logs, "lockout") {
		t.Errorf("init warned: %s", logs)
	}
	s, err := daemon.OpenState(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := s.TPMInfo(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	kept, _ := s.Store.Meta("tpm.lockout_auth")
	s.Close()
	if !rep.Lockout.AuthSet || !rep.LockoutAuthKept || len(kept) != 32 {
		t.Fatalf("after init: lockout auth set %v, kept %v (%d bytes)", rep.Lockout.AuthSet, rep.LockoutAuthKept, len(kept))
	}
	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil || !strings.Contains(text.String(), "set by brokerd init, kept in the state file") {
		t.Errorf("tpm info text: %v\n%s", err, &text)
	}

	cfg2, logs := initOn(t, sw.Address())
	if !strings.Contains(logs, "has an auth value already, not brokerd's") {
		t.Errorf("a second init on the TPM logged: %s", logs)
	}
	s, err = daemon.OpenState(cfg2, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if rep, err := s.TPMInfo(ctx, 0); err != nil || rep.LockoutAuthKept || !rep.Lockout.AuthSet {
		t.Fatalf("second state: %+v, %v: the lockout auth is set, and not this state's", rep, err)
	}
}

// TestConfigCheckFindsROCAKeys: config check names every RSA key with the
// ROCA fingerprint, however it came (here a software key made as
// Infineon's RSALib made them, imported).
func TestConfigCheckFindsROCAKeys(t *testing.T) {
	sw := swtpmtest.Start(t)
	cfg, _ := initOn(t, sw.Address())
	s, err := daemon.OpenState(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Keys.Import(ctx, "weak.key", testpki.RSALibKey(t, 2048), keys.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	rep := daemon.Check(ctx, cfg.File(), nil, nil)
	if !slices.ContainsFunc(rep.Problems, func(p string) bool {
		return strings.HasPrefix(p, `key "weak.key": RSA key has the ROCA fingerprint`)
	}) {
		t.Fatalf("config check problems: %q", rep.Problems)
	}
	if len(rep.Problems) != 1 {
		t.Errorf("problems %q: want only the ROCA key", rep.Problems)
	}
}
