// Package daemon is `brokerd serve`: it owns every long-lived resource and
// goroutine of the running daemon — the state (TPM, state file, audit log,
// keys), the policy, the bank client and its trust store, revocations, the
// API and health listeners, the admin socket, checkpoints, retention,
// renewal of the server certificate, the watchdog and sd_notify — and
// builds them from a validated configuration in named steps.
//
// New builds and binds; Run serves until its context ends and then
// releases everything in order (the last audit record and checkpoint come
// after the last request). Reload puts changed files in force, as SIGHUP
// does. The command line (package main) parses flags, turns signals into
// Reload and cancellation, and runs admin commands through Deps.Admin.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os/user"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/brokerd/brokerd/admin"
	"github.com/brokerd/brokerd/audit"
	"github.com/brokerd/brokerd/broker"
	"github.com/brokerd/brokerd/config"
	"github.com/brokerd/brokerd/internal/watch"
	"github.com/brokerd/brokerd/keys"
	"github.com/brokerd/brokerd/netstack/bank"
	"github.com/brokerd/brokerd/netstack/listener"
	"github.com/brokerd/brokerd/pki"
	"github.com/brokerd/brokerd/policy"
	"github.com/brokerd/brokerd/tpm"
)

// Deps is what the daemon takes from its caller besides the configuration.
type Deps struct {
	// Log receives the daemon's log; nil discards it.
	Log *slog.Logger
	// Version is the build's version, for the log and the audit log.
	Version string
	// Admin returns the handler of the admin socket's calls (the command
	// line's commands, run inside the daemon); nil: no admin socket.
	Admin func(*Daemon) admin.Handler
	// Notify sends a state to systemd; nil: sd_notify on $NOTIFY_SOCKET.
	Notify func(state string) error
	// Ready, when set, is told the API addresses once the daemon serves.
	Ready func(api []string)
	// WatchInterval is how often watched files are checked; 0: a second.
	WatchInterval time.Duration
	// Bank, when set, adjusts the bank client's configuration (tests give
	// a resolver and a dialer of their own).
	Bank func(*bank.Config)
}

// Daemon is a running brokerd. Its methods are safe for concurrent use.
type Daemon struct {
	cfg  *config.Config
	deps Deps
	log  *slog.Logger

	state *State
	sign  audit.SignFunc
	pol   *policy.Engine
	trust *bank.TrustStore
	bank  *bank.Client
	rev   *pki.Revocations
	ca    *pki.Authority // nil with a PKI of the operator's own
	api   *broker.API
	srv   *listener.Server
	ls    *listener.Listeners
	admL  *net.UnixListener
	addrs []string
	// healthAddrs are the plain health listeners' addresses.
	healthAddrs []string

	metrics  *metrics
	metricsL []net.Listener
	// keygens counts key generations (and imports, which may generate a
	// sealing key) in progress: they hold the TPM for seconds to minutes
	// on a hardware chip, and the TPM is busy, not stuck, meanwhile.
	keygens atomic.Int32
	// refused counts client certificates refused at handshakes.
	refused refusals
	// tlsSeen is the stamp of the TLS files as last loaded.
	tlsSeen atomic.Pointer[watch.Stamp]
	// certChanged wakes renewal when the server certificate changed.
	certChanged chan struct{}
	// closers release what New opened, last first.
	closers   []func()
	closeOnce sync.Once
}

// New opens the state and builds the daemon in named steps, binding its
// listeners; nothing is served before Run. On error everything opened is
// released.
func New(ctx context.Context, cfg *config.Config, deps Deps) (*Daemon, error) {
	if deps.Log == nil {
		deps.Log = slog.New(slog.DiscardHandler)
	}
	if deps.Notify == nil {
		deps.Notify = func(state string) error { _, err := daemon.SdNotify(false, state); return err }
	}
	if deps.WatchInterval <= 0 {
		deps.WatchInterval = time.Second
	}
	d := &Daemon{cfg: cfg, deps: deps, log: deps.Log, certChanged: make(chan struct{}, 1), metrics: newMetrics()}
	steps := []func(context.Context) error{
		d.openState,
		d.startAudit,
		d.loadKeys,
		d.harden,
		d.loadPolicy,
		d.loadBankTrust,
		d.loadRevocations,
		d.buildAPI,
		d.bindListeners,
		d.bindMetrics,
		d.bindAdmin,
	}
	for _, step := range steps {
		if err := step(ctx); err != nil {
			d.release()
			return nil, err
		}
	}
	return d, nil
}

// Config is the configuration the daemon runs with.
func (d *Daemon) Config() *config.Config { return d.cfg }

// State lends the daemon's state (its Close does nothing); the changes
// made through it are put in force at once.
func (d *Daemon) State() *State {
	l := d.state.Lend()
	l.daemon = d
	return l
}

// Addrs are the API listeners' addresses.
func (d *Daemon) Addrs() []string { return d.addrs }

// HealthAddrs are the plain /health listeners' addresses.
func (d *Daemon) HealthAddrs() []string { return d.healthAddrs }

func (d *Daemon) onClose(fn func()) { d.closers = append(d.closers, fn) }

// release closes what New opened, last first; once.
func (d *Daemon) release() {
	d.closeOnce.Do(func() {
		for i := len(d.closers) - 1; i >= 0; i-- {
			d.closers[i]()
		}
	})
}

func (d *Daemon) openState(ctx context.Context) error {
	s, err := openState(d.cfg, d.log, d.metrics.auditCommit, d.metrics)
	if err != nil {
		return err
	}
	d.state = s
	d.onClose(s.Close)
	s.warnFirmware(ctx, d.log)
	return nil
}

// startAudit readies the audit key and records the start (and a TPM clock
// that went back); the stop is recorded when the daemon is released.
func (d *Daemon) startAudit(ctx context.Context) error {
	signer, err := d.state.AuditKey(ctx)
	if err != nil {
		return err
	}
	d.sign = audit.KeySigner(tpm.SignerWithClass(signer, tpm.ClassHousekeeping))
	clockErr := d.state.Audit.CheckClock(ctx, d.state.Clock())
	// The checkpointer stops after the daemon.stop record, so that its
	// last checkpoint covers everything.
	cpCtx, stopCheckpoints := context.WithCancel(context.Background())
	cpDone := make(chan struct{})
	go func() {
		defer close(cpDone)
		d.state.Audit.RunCheckpoints(cpCtx, d.cfg.Audit.CheckpointEvery, d.cfg.Audit.CheckpointInterval.Duration, d.sign,
			d.state.Clock(), func(err error) { d.log.Error("audit checkpoint", "err", err) })
	}()
	d.onClose(func() { stopCheckpoints(); <-cpDone })
	d.record("daemon.start", "", "brokerd "+d.deps.Version+" on "+d.cfg.TPM.Address, nil)
	d.onClose(func() { d.record("daemon.stop", "", "", nil) })
	if clockErr != nil {
		d.log.Error("audit: the TPM's clock is behind the audit log; audit verify will report it", "err", clockErr)
		d.record("daemon.tpm_clock", "", "the TPM's clock is behind the last audit checkpoint", clockErr)
	}
	return nil
}

// loadKeys loads every key; one unusable key (a PCR-bound key after a
// firmware update, say) does not take the others down: config check names
// it too.
func (d *Daemon) loadKeys(ctx context.Context) error {
	if err := d.state.Keys.LoadAll(ctx); err != nil {
		d.log.Error("some keys cannot be used", "err", err)
	}
	return nil
}

func (d *Daemon) loadPolicy(context.Context) error {
	pol, err := policy.NewEngine(d.cfg.Policy.File, d.log)
	if err != nil {
		return err
	}
	d.pol = pol
	d.record("admin.policy.loaded", "", d.policyState(), nil)
	return nil
}

func (d *Daemon) loadBankTrust(context.Context) error {
	trust, err := bank.NewTrustStore(d.cfg.Bank.TrustDir, d.log)
	if err != nil {
		return err
	}
	d.trust = trust
	d.record("admin.trust.loaded", "", d.trustState(), nil)
	bc := d.cfg.BankConfig(d.log)
	if d.deps.Bank != nil {
		d.deps.Bank(&bc)
	}
	d.bank = bank.New(bc, trust)
	d.onClose(d.bank.CloseIdle)
	return nil
}

// loadRevocations loads the CRL files and brokerd's own revocations.
func (d *Daemon) loadRevocations(ctx context.Context) error {
	ca, err := d.state.PKI.Authority(ctx)
	if err != nil && !errors.Is(err, pki.ErrNoCA) {
		return err
	}
	d.ca = ca
	if d.rev, err = pki.NewRevocations(d.cfg.API.CRLFiles, d.log); err != nil {
		return err
	}
	if err := d.state.PKI.ApplyOwn(d.rev); err != nil {
		return err
	}
	if len(d.cfg.API.CRLFiles) > 0 {
		d.record("admin.crl.loaded", "", d.crlState(), nil)
	}
	return nil
}

// buildAPI makes the API and the server that carries it over mutual TLS.
func (d *Daemon) buildAPI(ctx context.Context) error {
	d.api = broker.New(broker.Config{MaxBody: d.cfg.API.MaxBody, Health: d.health, Audit: d.state.Audit, DenialQuota: d.cfg.Audit.DenialQuota,
		CheckClient: d.rev.Check, Identity: policy.IdentityOptions{RoleOID: d.cfg.RoleOID()}, ServerName: d.serverName, Log: d.log, Observe: d.metrics.observe,
		TPMBusy:              func() bool { return d.state.TPM.Saturated(tpm.ClassAPI) },
		MaxInFlightPerClient: d.cfg.API.MaxInFlightPerClient, MaxBankCalls: d.cfg.Bank.MaxCalls, Warnings: d.keyWarnings},
		d.state.Keys, d.pol, d.bank)
	srv, err := listener.NewServer(listener.Config{
		MinVersion:          d.cfg.TLSMinVersion(),
		ReadHeaderTimeout:   d.cfg.API.ReadHeaderTimeout.Duration,
		ReadTimeout:         d.cfg.API.ReadTimeout.Duration,
		WriteTimeout:        d.cfg.API.WriteTimeout.Duration,
		IdleTimeout:         d.cfg.API.IdleTimeout.Duration,
		MaxHeaderBytes:      64 << 10,
		MaxConns:            d.cfg.API.MaxConns,
		MaxConnsPerIP:       d.cfg.API.MaxConnsPerIP,
		IPv6PrefixLen:       d.cfg.API.IPv6PrefixLen,
		HandshakesPerIP:     d.cfg.API.HandshakesPerIP,
		HandshakeBurstPerIP: d.cfg.API.HandshakeBurstPerIP,
		MaxTrackedIPs:       d.cfg.API.MaxTrackedIPs,
		RequestsPerIP:       d.cfg.API.RequestsPerIP,
		RequestBurstPerIP:   d.cfg.API.RequestBurstPerIP,
		MaxPause:            d.cfg.API.MaxPause.Duration,
		CheckClient:         d.rev.Check,
		OnRefused:           d.handshakeRefused,
		Log:                 d.log,
	}, func() (*listener.Material, error) { return d.loadTLS(ctx) }, d.api.Handler(), d.api.HealthHandler())
	if err != nil {
		return err
	}
	d.srv = srv
	return nil
}

// serverName is the name clients reach brokerd by: the first of
// pki.server_names, else the server certificate's first name.
func (d *Daemon) serverName() string {
	if len(d.cfg.PKI.ServerNames) > 0 {
		return d.cfg.PKI.ServerNames[0]
	}
	if d.srv == nil {
		return ""
	}
	leaf := d.srv.Leaf()
	switch {
	case len(leaf.DNSNames) > 0:
		return leaf.DNSNames[0]
	case len(leaf.IPAddresses) > 0:
		return leaf.IPAddresses[0].String()
	}
	return ""
}

// loadTLS reads the server certificate and the client CAs, with the
// server key in the TPM.
func (d *Daemon) loadTLS(ctx context.Context) (*listener.Material, error) {
	stamp := watch.StampOf(d.cfg.API.TLSCert, d.cfg.API.ClientCA)
	d.tlsSeen.Store(&stamp)
	key, err := d.state.Keys.Signer(ctx, d.cfg.API.TLSKey)
	if errors.Is(err, keys.ErrUnknownKey) {
		return nil, fmt.Errorf("no server key %q in the TPM: this state was not made by brokerd init; initialise a new one", d.cfg.API.TLSKey)
	}
	if err != nil {
		return nil, err
	}
	// Handshakes wait behind clients' operations for the TPM.
	return listener.LoadMaterial(d.cfg.API.TLSCert, d.cfg.API.ClientCA, tpm.SignerWithClass(key, tpm.ClassHandshake))
}

func (d *Daemon) bindListeners(context.Context) error {
	ls, err := listener.Listen(d.cfg.API.Listen, d.cfg.Health.Listen)
	if err != nil {
		return err
	}
	d.ls = ls
	for _, l := range ls.API {
		d.addrs = append(d.addrs, l.Addr().String())
	}
	for _, l := range ls.Health {
		d.healthAddrs = append(d.healthAddrs, l.Addr().String())
	}
	d.onClose(ls.Close)
	return nil
}

// bindMetrics opens the metrics listeners (none unless configured).
func (d *Daemon) bindMetrics(context.Context) error {
	d.registerMetrics()
	for _, a := range d.cfg.Metrics.Listen {
		l, err := net.Listen("tcp", a)
		if err != nil {
			return fmt.Errorf("metrics: listen on %s: %w", a, err)
		}
		d.metricsL = append(d.metricsL, l)
		d.onClose(func() { l.Close() })
	}
	return nil
}

// reportStatus refreshes systemd's STATUS= line every interval.
func (d *Daemon) reportStatus(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.notify(d.status())
		}
	}
}

// bindAdmin opens the admin socket: mode 0660, group admin.group when it
// exists (else root only, and a warning).
func (d *Daemon) bindAdmin(context.Context) error {
	if d.deps.Admin == nil {
		return nil
	}
	gid := -1
	if g, err := user.LookupGroup(d.cfg.Admin.Group); err == nil {
		gid, _ = strconv.Atoi(g.Gid)
	} else {
		d.log.Warn("the admin group does not exist: only root and brokerd's own user may use the admin socket; create it (groupadd --system "+
			d.cfg.Admin.Group+") and add the operators", "group", d.cfg.Admin.Group)
	}
	l, err := admin.Listen(d.cfg.Admin.Socket, gid)
	if err != nil {
		return err
	}
	d.admL = l
	d.onClose(func() { l.Close() })
	return nil
}

// Run serves until ctx ends or a listener fails, then drains requests in
// flight (api.shutdown_timeout), stops every goroutine and releases the
// daemon: the last audit record and a final checkpoint come last.
func (d *Daemon) Run(ctx context.Context) error {
	defer d.release()
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	d.startBackground(runCtx, &wg)
	d.onClose(func() { stop(); wg.Wait() })
	for _, l := range d.ls.API {
		d.srv.ServeAPI(l)
	}
	for _, l := range d.ls.Health {
		d.srv.ServeHealth(l)
	}
	d.log.Info("brokerd ready", "version", d.deps.Version, "tpm", d.cfg.TPM.Address, "api", d.addrs)
	d.notify(daemon.SdNotifyReady + "\n" + d.status())
	if d.deps.Ready != nil {
		d.deps.Ready(d.addrs)
	}
	select {
	case err := <-d.srv.Err():
		d.srv.Shutdown(context.Background())
		return err
	case <-ctx.Done():
	}
	d.notify(daemon.SdNotifyStopping)
	d.log.Info("stopping: draining requests in flight", "timeout", d.cfg.API.ShutdownTimeout.Duration)
	sctx, cancel := context.WithTimeout(context.Background(), d.cfg.API.ShutdownTimeout.Duration)
	defer cancel()
	return d.srv.Shutdown(sctx)
}

// startBackground starts the goroutines that run while the daemon serves:
// watchers, retention, renewal, the admin socket and the watchdog.
func (d *Daemon) startBackground(ctx context.Context, wg *sync.WaitGroup) {
	run := func(fn func()) {
		wg.Add(1)
		go func() { defer wg.Done(); fn() }()
	}
	iv := d.deps.WatchInterval
	run(func() { d.pol.Watch(ctx, iv, d.policyReloaded) })
	run(func() { d.trust.Watch(ctx, iv, d.trustReloaded) })
	run(func() { d.rev.Watch(ctx, iv, d.crlReloaded) })
	run(func() {
		watch.Poll(ctx, watch.Options{Paths: []string{d.cfg.API.TLSCert, d.cfg.API.ClientCA}, Interval: iv,
			Seen: func() watch.Stamp { return *d.tlsSeen.Load() }, Reload: d.ReloadTLS, What: "TLS material", Log: d.log})
	})
	if r := d.cfg.Audit.Retention.Duration; r > 0 {
		run(func() { d.state.Audit.RunRetention(ctx, r, time.Hour, d.sign, d.log) })
	}
	if d.ca != nil {
		run(func() { d.state.PKI.Maintain(ctx, d.ca, d.srv, d.record, d.certChanged, d.log) })
	}
	if d.admL != nil {
		srv := admin.Serve(ctx, d.admL, admin.RootOrGroup(d.adminGID()), d.deps.Admin(d), d.log)
		d.log.Info("admin socket ready", "path", d.cfg.Admin.Socket, "group", d.cfg.Admin.Group)
		run(func() { <-ctx.Done(); srv.Close() })
	}
	run(func() { d.selfCheck(ctx) })
	run(func() { d.flushRecords(ctx, time.Minute) })
	run(func() { d.reportStatus(ctx, 30*time.Second) })
	run(func() { d.logExpiry(ctx, 24*time.Hour) })
	if len(d.metricsL) > 0 {
		run(func() { d.serveMetrics(ctx, d.metricsL) })
	}
	run(func() { d.watchdog(ctx) })
}

func (d *Daemon) adminGID() int {
	if g, err := user.LookupGroup(d.cfg.Admin.Group); err == nil {
		if gid, err := strconv.Atoi(g.Gid); err == nil {
			return gid
		}
	}
	return -1
}

func (d *Daemon) notify(state string) {
	if err := d.deps.Notify(state); err != nil {
		d.log.Warn("sd_notify", "state", strconv.Quote(state), "err", err)
	}
}
