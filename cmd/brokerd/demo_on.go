//go:build simulator

package main

import (
	"context"
	"fmt"
	"path/filepath"

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
	return serve(ctx, cfg, daemon.Deps{Log: cfg.Logger(e.stderr), Ready: func(addrs []string) { daemon.WriteDemoGuide(e.stdout, abs, addrs[0]) }})
}
