//go:build simulator

package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/brokerd/brokerd/daemon"
)

// demoCommands adds `brokerd demo` to simulator builds.
func demoCommands() map[string]command {
	return map[string]command{"demo": {"run brokerd on the embedded TPM simulator (demo builds only)", cmdDemo, nil}}
}

func cmdDemo(ctx context.Context, e *env, args []string) error {
	fs := e.flags("demo", "[--dir DIR] [--listen ADDR]",
		"Run brokerd for real on the in-process TPM simulator. The first run writes a\n"+
			"configuration and state in DIR, a demo CA, a server certificate for a key made\n"+
			"inside the TPM, a client certificate, two signing keys and a policy for the client;\n"+
			"every run serves the API and prints curl commands to try. Stop with Ctrl-C.")
	dir := fs.String("dir", "demo", "demo `directory`")
	listen := fs.String("listen", "", "API listen `address` (default: the demo's brokerd.toml; "+daemon.DemoListen+" when it is made)")
	if err := e.parse(fs, args); err != nil {
		return err
	}
	cfg, created, err := daemon.OpenDemo(ctx, *dir, *listen, e.logger())
	if err != nil {
		return err
	}
	abs := filepath.Dir(cfg.File())
	if created {
		fmt.Fprintf(e.stdout, "initialised %s on the TPM simulator\n", abs)
	}
	return serve(ctx, cfg, daemon.Deps{Log: cfg.Logger(e.stderr), Ready: func(addrs []string) { printDemo(e.stdout, abs, addrs[0]) }})
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
		q(filepath.Join(dir, "client", daemon.DemoClient+".crt")), q(filepath.Join(dir, "client", daemon.DemoClient+".key")))
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
