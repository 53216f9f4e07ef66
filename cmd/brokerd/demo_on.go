//go:build simulator

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/brokerd/brokerd/audit"
	"github.com/brokerd/brokerd/config"
	"github.com/brokerd/brokerd/daemon"
	"github.com/brokerd/brokerd/keys"
	"github.com/brokerd/brokerd/pki"
	"github.com/brokerd/brokerd/policy"
	"github.com/brokerd/brokerd/store"
	"github.com/brokerd/brokerd/tpm"
)

// demoCommands adds `brokerd demo` to simulator builds.
func demoCommands() map[string]command {
	return map[string]command{"demo": {"run brokerd on the embedded TPM simulator (demo builds only)", cmdDemo, nil}}
}

// demoKeys are the keys the demo makes inside the TPM on first run.
var demoKeys = []struct {
	id  string
	alg tpm.Algorithm
}{{"qseal.key", tpm.RSA2048}, {"qwac.key", tpm.P256}}

func cmdDemo(ctx context.Context, e *env, args []string) error {
	fs := e.flags("demo", "[--dir DIR] [--listen ADDR]",
		"Run brokerd for real on the in-process TPM simulator. The first run writes a\n"+
			"configuration and state in DIR, a demo CA, a server certificate for a key made\n"+
			"inside the TPM, a client certificate, two signing keys and a policy for the client;\n"+
			"every run serves the API and prints curl commands to try. Stop with Ctrl-C.")
	dir := fs.String("dir", "demo", "demo `directory`")
	listen := fs.String("listen", "127.0.0.1:8443", "API listen `address`")
	if err := e.parse(fs, args); err != nil {
		return err
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	cfgPath := filepath.Join(abs, "brokerd.toml")
	if _, err := os.Stat(cfgPath); errors.Is(err, os.ErrNotExist) {
		if err := demoSetup(ctx, abs, cfgPath, e); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "initialised %s on the TPM simulator\n", abs)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	cfg.API.Listen = []string{*listen}
	if err := resumeSimulator(ctx, cfg); err != nil {
		return err
	}
	return serve(ctx, cfg, daemon.Deps{Log: cfg.Logger(e.stderr), Ready: func(addrs []string) { printDemo(e.stdout, abs, addrs[0]) }})
}

// resumeSimulator brings the simulator's reset counter up to where the
// audit log last saw it. The simulator keeps nothing between runs, so each
// run starts as a TPM that was never reset, and the audit log would rightly
// report a TPM whose state went back; a hardware TPM keeps the counter in
// NV memory. Every start of the simulator counts as one reset (its clock
// starts at the wall clock's, see package tpm).
func resumeSimulator(ctx context.Context, cfg *config.Config) error {
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

// demoSetup writes the demo's configuration, PKI, keys and policy: as on
// an appliance, brokerd's own CA (key in the TPM) certifies the server key
// (in the TPM) and a client, demo-client, whose files go to DIR/client.
func demoSetup(ctx context.Context, dir, cfgPath string, e *env) error {
	cfg := config.Default()
	cfg.TPM.Address = tpm.KindSimulator
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.Admin.Socket = filepath.Join(dir, "admin.sock")
	cfg.PKI.ServerNames = []string{"localhost", "127.0.0.1", "::1"}
	if _, err := daemon.Init(ctx, cfgPath, cfg, nil, e.logger()); err != nil {
		return err
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	s, err := daemon.OpenState(cfg, e.logger())
	if err != nil {
		return err
	}
	defer s.Close()
	for _, k := range demoKeys {
		if _, _, err := s.Keys.Create(ctx, k.id, k.alg, keys.CreateOptions{}); err != nil {
			return err
		}
	}
	quiet := &env{stdin: e.stdin, stdout: io.Discard, stderr: e.stderr, getenv: e.getenv, caller: "demo set-up"}
	if err := newClientFiles(ctx, quiet, s, pki.ClientRequest{Client: pki.Client{Name: "demo-client"}}, filepath.Join(dir, "client")); err != nil {
		return err
	}
	p := &policy.Policy{}
	if err := p.Put(policy.Rule{Name: "demo-client", CN: "demo-client", Keys: []string{"*"}, Ops: []string{"*"}}); err != nil {
		return err
	}
	return p.Save(cfg.Policy.File)
}

// printDemo prints curl commands that work when pasted.
func printDemo(w io.Writer, dir, addr string) {
	_, port, _ := net.SplitHostPort(addr)
	base := "https://localhost:" + port
	self, err := os.Executable()
	if err != nil {
		self = "brokerd"
	}
	q := func(p string) string { return "'" + strings.ReplaceAll(p, "'", `'\''`) + "'" }
	auth := fmt.Sprintf("-sS --cacert %s --cert %s --key %s", q(filepath.Join(dir, "client", "ca.crt")),
		q(filepath.Join(dir, "client", "demo-client.crt")), q(filepath.Join(dir, "client", "demo-client.key")))
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
