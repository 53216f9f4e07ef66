package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/brokerd/brokerd/broker"
	"github.com/brokerd/brokerd/config"
	"github.com/brokerd/brokerd/keys"
	"github.com/brokerd/brokerd/netstack"
	"github.com/brokerd/brokerd/policy"
	"github.com/brokerd/brokerd/tpm"
)

func cmdServe(ctx context.Context, e *env, args []string) error {
	fs := e.flags("serve", "",
		"Run the daemon: the mutual-TLS API (and the plain /health listener if configured).\n"+
			"Tells systemd READY=1 once keys are loaded and listeners are bound (Type=notify),\n"+
			"pings the watchdog while the TPM answers, reloads TLS material and policy on SIGHUP,\n"+
			"and drains requests in flight on SIGTERM.")
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := e.loadConfig()
	if err != nil {
		return err
	}
	return serve(ctx, cfg, cfg.Logger(e.stderr), nil)
}

// serve runs the daemon until ctx ends. ready, when set, is told the bound
// API addresses once brokerd serves.
func serve(ctx context.Context, cfg *config.Config, log *slog.Logger, ready func(api []string)) error {
	s, err := openState(cfg, log)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.keys.LoadAll(ctx); err != nil {
		// One unusable key (a PCR-bound key after a firmware update, say)
		// must not take the others down; config check names it too.
		log.Error("some keys cannot be used", "err", oneLine(err))
	}
	pol, err := policy.NewEngine(cfg.Policy.File, log)
	if err != nil {
		return err
	}
	go pol.Watch(ctx, time.Second, nil)

	trust, err := netstack.NewTrustStore(cfg.Bank.TrustDir, log)
	if err != nil {
		return err
	}
	go trust.Watch(ctx, time.Second, nil)
	bank := netstack.NewOutbound(cfg.OutboundConfig(log), trust)

	alive := cfg.TPM.CommandTimeout.Duration
	api := broker.New(broker.Config{MaxBody: cfg.API.MaxBody, Health: healthCheck(s, alive), Log: log}, s.keys, pol, bank)
	loadTLS := func() (*netstack.Material, error) {
		key, err := s.keys.Signer(ctx, cfg.API.TLSKey)
		if errors.Is(err, keys.ErrUnknownKey) {
			return nil, fmt.Errorf("no server key %q in the TPM: run brokerd init with --tls-cert, --tls-key and --client-ca", cfg.API.TLSKey)
		}
		if err != nil {
			return nil, err
		}
		return netstack.LoadMaterial(cfg.API.TLSCert, cfg.API.ClientCA, key)
	}
	srv, err := netstack.NewServer(netstack.ServerConfig{
		MinVersion:        cfg.TLSMinVersion(),
		ReadHeaderTimeout: cfg.API.ReadHeaderTimeout.Duration,
		ReadTimeout:       cfg.API.ReadTimeout.Duration,
		WriteTimeout:      cfg.API.WriteTimeout.Duration,
		IdleTimeout:       cfg.API.IdleTimeout.Duration,
		MaxHeaderBytes:    64 << 10,
		Log:               log,
	}, loadTLS, api.Handler(), api.HealthHandler())
	if err != nil {
		return err
	}
	ls, err := netstack.Listen(cfg.API.Listen, cfg.Health.Listen)
	if err != nil {
		return err
	}
	var addrs []string
	for _, l := range ls.API {
		srv.ServeAPI(l)
		addrs = append(addrs, l.Addr().String())
	}
	for _, l := range ls.Health {
		srv.ServeHealth(l)
	}
	log.Info("brokerd ready", "version", version, "tpm", cfg.TPM.Address, "api", addrs)
	status := "STATUS=serving the API on " + strings.Join(addrs, " ")
	notify(log, daemon.SdNotifyReady+"\n"+status)
	if ready != nil {
		ready(addrs)
	}
	go watchdog(ctx, s.dev, alive, log)

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-hup:
			notify(log, daemon.SdNotifyReloading+"\n"+daemon.SdNotifyMonotonicUsec())
			if err := srv.Reload(); err != nil {
				log.Error("reload: TLS material does not load; keeping the one in use", "err", err)
			}
			if err := pol.Reload(); err != nil {
				log.Error("reload: policy does not load; keeping the rules in force", "err", err)
			}
			if err := trust.Reload(); err != nil {
				log.Error("reload: bank trust does not load; keeping the CAs in use", "err", err)
			}
			notify(log, daemon.SdNotifyReady+"\n"+status)
		case err := <-srv.Err():
			return err
		case <-ctx.Done():
			notify(log, daemon.SdNotifyStopping)
			log.Info("stopping: draining requests in flight", "timeout", cfg.API.ShutdownTimeout.Duration)
			sctx, cancel := context.WithTimeout(context.Background(), cfg.API.ShutdownTimeout.Duration)
			defer cancel()
			return srv.Shutdown(sctx)
		}
	}
}

// tpmAlive reports whether the TPM answers: a ping succeeds, or the queue
// is full but an operation succeeded within the last `within` (busy, not
// stuck).
func tpmAlive(ctx context.Context, dev *tpm.Device, within time.Duration) error {
	err := dev.Ping(ctx)
	if err != nil && errors.Is(err, tpm.ErrBusy) && time.Since(dev.LastSuccess()) < within {
		return nil
	}
	return err
}

// healthCheck is GET /health: the TPM answers and the state file takes a
// write.
func healthCheck(s *state, within time.Duration) func(context.Context) error {
	return func(ctx context.Context) error {
		if err := tpmAlive(ctx, s.dev, within); err != nil {
			return &broker.HealthError{Reason: "the TPM does not answer", Err: err}
		}
		if err := s.st.Writable(); err != nil {
			return &broker.HealthError{Reason: "the state is not writable", Err: err}
		}
		return nil
	}
}

// watchdog pings systemd's watchdog at half its interval, and only while
// the TPM answers: a wedged TPM gets brokerd restarted.
func watchdog(ctx context.Context, dev *tpm.Device, within time.Duration, log *slog.Logger) {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil || interval == 0 {
		return
	}
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			pctx, cancel := context.WithTimeout(ctx, interval/2)
			err := tpmAlive(pctx, dev, within)
			cancel()
			if err != nil {
				log.Error("watchdog: the TPM does not answer; not pinging systemd", "err", err)
				continue
			}
			notify(log, daemon.SdNotifyWatchdog)
		}
	}
}

func notify(log *slog.Logger, state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		log.Warn("sd_notify", "state", strconv.Quote(state), "err", err)
	}
}
