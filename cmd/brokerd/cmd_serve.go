package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/brokerd/brokerd/config"
	"github.com/brokerd/brokerd/daemon"
)

func cmdServe(ctx context.Context, e *env, args []string) error {
	fs := e.flags("serve", "",
		"Run the daemon: the mutual-TLS API (and the plain /health listener if configured).\n"+
			"Tells systemd READY=1 once keys are loaded and listeners are bound (Type=notify),\n"+
			"pings the watchdog while the TPM answers, reloads TLS material and policy on SIGHUP,\n"+
			"and drains requests in flight on SIGTERM.")
	if err := e.parse(fs, args); err != nil {
		return err
	}
	cfg, err := e.loadConfig()
	if err != nil {
		return err
	}
	return serve(ctx, cfg, daemon.Deps{Log: cfg.Logger(e.stderr)})
}

// serve runs the daemon until ctx ends; SIGHUP reloads it.
func serve(ctx context.Context, cfg *config.Config, deps daemon.Deps) error {
	deps.Version, deps.Admin = version, adminHandler
	d, err := daemon.New(ctx, cfg, deps)
	if err != nil {
		return err
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer func() { signal.Stop(hup); close(hup) }() // once stopped, hup gets no more signals
	go func() {
		for range hup {
			d.Reload()
		}
	}()
	return d.Run(ctx)
}
