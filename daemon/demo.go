//go:build simulator

package daemon

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/brokerd/brokerd/admin"
	"github.com/brokerd/brokerd/audit"
	"github.com/brokerd/brokerd/config"
	"github.com/brokerd/brokerd/keys"
	"github.com/brokerd/brokerd/pki"
	"github.com/brokerd/brokerd/policy"
	"github.com/brokerd/brokerd/store"
	"github.com/brokerd/brokerd/tpm"
)

// This file is `brokerd demo`'s: brokerd for real on the in-process TPM
// simulator, with its own CA, keys, a client and a policy, and what to try
// on it. Only builds with the simulator tag have it.

// DemoKeys are the keys the demo makes inside the TPM on first run: their
// ids and algorithms.
var DemoKeys = []struct {
	ID  string
	Alg tpm.Algorithm
}{{"qseal.key", tpm.RSA2048}, {"qwac.key", tpm.P256}}

// DemoClient is the name of the demo's client; its files go to DIR/client.
const DemoClient = "demo-client"

// DemoListen is the API address of a demo set up without one.
const DemoListen = "127.0.0.1:8443"

// OpenDemo returns the configuration of the demo in dir, setting the demo up
// first when dir has none (its API listening on listen, or DemoListen),
// and brings the simulator to where the audit log last saw it
// (ResumeSimulator). A listen address given also replaces the
// configuration's for this run. created says that the demo was set up now.
func OpenDemo(ctx context.Context, dir, listen string, log *slog.Logger) (cfg *config.Config, created bool, err error) {
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, false, fmt.Errorf("demo: %w", err)
	}
	cfgPath := filepath.Join(dir, "brokerd.toml")
	if _, err := os.Stat(cfgPath); errors.Is(err, os.ErrNotExist) {
		if err := SetupDemo(ctx, dir, cfgPath, cmp.Or(listen, DemoListen), log); err != nil {
			return nil, false, err
		}
		created = true
	}
	if cfg, err = config.Load(cfgPath); err != nil {
		return nil, false, err
	}
	if listen != "" {
		cfg.API.Listen = []string{listen}
	}
	return cfg, created, ResumeSimulator(ctx, cfg)
}

// SetupDemo writes the demo's configuration (cfgPath, in dir; its API
// listening on listen), PKI, keys and policy: as on an appliance, brokerd's
// own CA (key in the TPM) certifies the server key (in the TPM) and a
// client, DemoClient, whose files go to DIR/client, and a rule lets that
// client use every key.
func SetupDemo(ctx context.Context, dir, cfgPath, listen string, log *slog.Logger) error {
	cfg := config.Default()
	cfg.API.Listen = []string{listen}
	cfg.TPM.Address = tpm.KindSimulator
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.Admin.Socket = filepath.Join(dir, "admin.sock")
	cfg.PKI.ServerNames = []string{"localhost", "127.0.0.1", "::1"}
	if _, err := Init(ctx, cfgPath, cfg, nil, log); err != nil {
		return err
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	s, err := OpenState(cfg, log)
	if err != nil {
		return err
	}
	defer s.Close()
	for _, k := range DemoKeys {
		if _, _, err := s.Keys.Create(ctx, k.ID, k.Alg, keys.CreateOptions{}); err != nil {
			return fmt.Errorf("demo: key %s: %w", k.ID, err)
		}
	}
	req := pki.ClientRequest{Client: pki.Client{Name: DemoClient}}
	if _, _, err := s.IssueClientFiles(ctx, "demo set-up", req, filepath.Join(dir, "client"), admin.LocalFS{}); err != nil {
		return err
	}
	p := &policy.Policy{}
	if err := p.Put(policy.Rule{Name: DemoClient, CN: DemoClient, Keys: []string{"*"}, Ops: []string{"*"}}); err != nil {
		return err
	}
	return p.Save(cfg.Policy.File)
}

// ResumeSimulator brings the simulator's reset counter up to where the
// audit log last saw it. The simulator keeps nothing between runs, so each
// run starts as a TPM that was never reset, and the audit log would rightly
// report a TPM whose state went back; a hardware TPM keeps the counter in
// NV memory. Every start of the simulator counts as one reset (its clock
// starts at the wall clock's, see package tpm).
func ResumeSimulator(ctx context.Context, cfg *config.Config) error {
	st, err := store.Open(cfg.StatePath(), store.Options{ReadOnly: true})
	if err != nil {
		return err
	}
	defer st.Close()
	l, err := audit.Open(st)
	if err != nil {
		return err
	}
	last, err := l.LastCheckpoint()
	l.Close()
	if err != nil || last == nil {
		return err
	}
	for range 100000 {
		dev, err := tpm.Open(cfg.TPMConfig(), nil)
		if err != nil {
			return err
		}
		c, err := dev.ReadClock(ctx)
		dev.Close()
		if err != nil {
			return err
		}
		if c.ResetCount >= last.ResetCount { // serve's start is one more
			return nil
		}
	}
	return fmt.Errorf("demo: the simulator cannot reach the reset counter %d of the audit log", last.ResetCount)
}

// WriteDemoGuide prints what to try on the demo serving on addr, with its
// state in dir: curl commands that work when pasted.
func WriteDemoGuide(w io.Writer, dir, addr string) {
	_, port, _ := net.SplitHostPort(addr)
	base := "https://localhost:" + port
	self, err := os.Executable()
	if err != nil {
		self = "brokerd"
	}
	q := func(p string) string { return "'" + strings.ReplaceAll(p, "'", `'\''`) + "'" }
	auth := fmt.Sprintf("-sS --cacert %s --cert %s --key %s", q(filepath.Join(dir, "client", "ca.crt")),
		q(filepath.Join(dir, "client", DemoClient+".crt")), q(filepath.Join(dir, "client", DemoClient+".key")))
	sign := func(key, extra string) string {
		return fmt.Sprintf(`  curl %s -H 'Content-Type: application/json' -d '{"params":{"data":"a string to sign","key_id":"%s"%s}}' %s/sign`, auth, key, extra, base)
	}
	fmt.Fprintf(w, `
brokerd is serving on %s with keys inside the TPM simulator (state in %s).
Try these in another terminal:

  curl %s %s/
%s
%s
%s
  curl %s %s/keys
  curl -sS --cacert %s %s/health

Every request lands in the audit log. The command line reaches the running daemon
through its admin socket; try, in another terminal:

  %s --config %s audit export
  %s --config %s audit verify

Stop with Ctrl-C.
`, base, dir, auth, base, sign("qseal.key", ""), sign("qseal.key", `,"crypto_algorithm":"PS","hash_algorithm":"SHA512"`),
		sign("qwac.key", ""), auth, base, q(filepath.Join(dir, "tls", "ca.crt")), base,
		q(self), q(filepath.Join(dir, "brokerd.toml")), q(self), q(filepath.Join(dir, "brokerd.toml")))
}
