package main

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/brokerd/brokerd/broker"
	"github.com/brokerd/brokerd/config"
	"github.com/brokerd/brokerd/keys"
	"github.com/brokerd/brokerd/netstack"
	"github.com/brokerd/brokerd/pki"
	"github.com/brokerd/brokerd/policy"
	"github.com/brokerd/brokerd/store"
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
	// The checkpointer has a context of its own: cancelled last, after the
	// daemon.stop record, so that the final checkpoint covers everything;
	// the state closes only after it.
	cpDone := make(chan struct{})
	defer func() { <-cpDone }()
	cpCtx, stopCheckpoints := context.WithCancel(context.Background())
	defer stopCheckpoints()
	sign, err := auditSigner(ctx, s)
	if err != nil {
		close(cpDone)
		return err
	}
	clockErr := checkTPMClock(ctx, s)
	if clockErr != nil {
		log.Error("audit: the TPM's clock is behind the audit log; audit verify will report it", "err", clockErr)
	}
	go func() {
		defer close(cpDone)
		s.st.RunCheckpoints(cpCtx, cfg.Audit.CheckpointEvery, cfg.Audit.CheckpointInterval.Duration, sign, tpmClock(s.dev),
			func(err error) { log.Error("audit checkpoint", "err", err) })
	}()
	if cfg.Audit.Retention.Duration > 0 {
		go prune(ctx, s, cfg.Audit.Retention.Duration, sign, log)
	}
	rec := adminRecorder(s, log, "daemon")
	rec("daemon.start", "", "brokerd "+version+" on "+cfg.TPM.Address, nil)
	if clockErr != nil {
		rec("daemon.tpm_clock", "", "the TPM's clock is behind the last audit checkpoint", clockErr)
	}
	defer rec("daemon.stop", "", "", nil)
	if err := s.keys.LoadAll(ctx); err != nil {
		// One unusable key (a PCR-bound key after a firmware update, say)
		// must not take the others down; config check names it too.
		log.Error("some keys cannot be used", "err", oneLine(err))
	}
	pol, err := policy.NewEngine(cfg.Policy.File, log)
	if err != nil {
		return err
	}
	// What is in force is on record at start and after every reload: the
	// policy file's SHA-256, the bank CAs' fingerprints.
	policyState := func() string {
		return fmt.Sprintf("%d rules from %s (sha256 %s)", len(pol.Policy().Rules), cfg.Policy.File, fileSHA256(cfg.Policy.File))
	}
	rec("admin.policy.loaded", "", policyState(), nil)
	policyReloaded := func(err error) { rec("admin.policy.reload", "", policyState(), err) }
	go pol.Watch(ctx, time.Second, policyReloaded)

	trust, err := netstack.NewTrustStore(cfg.Bank.TrustDir, log)
	if err != nil {
		return err
	}
	trustState := func() string {
		d := fmt.Sprintf("%d bank CAs from %s", len(trust.CAs()), cfg.Bank.TrustDir)
		for _, ca := range trust.CAs() {
			d += " " + ca.Fingerprint
		}
		return d
	}
	rec("admin.trust.loaded", "", trustState(), nil)
	trustReloaded := func(err error) { rec("admin.trust.reload", "", trustState(), err) }
	go trust.Watch(ctx, time.Second, trustReloaded)
	bank := netstack.NewOutbound(cfg.OutboundConfig(log), trust)

	// Revocation: brokerd's CA's own, and CRLs of other CAs.
	ca, err := s.authority(ctx)
	if errors.Is(err, errNoCA) {
		ca, err = nil, nil
	}
	if err != nil {
		return err
	}
	rev, err := pki.NewRevocations(cfg.API.CRLFiles, log)
	if err != nil {
		return err
	}
	var revMu sync.Mutex
	if err := ownRevocations(&revMu, s, ca, rev); err != nil {
		return err
	}
	crlState := func() string {
		return fmt.Sprintf("CRL files %v (sha256 %s)", cfg.API.CRLFiles, filesSHA256(cfg.API.CRLFiles))
	}
	if len(cfg.API.CRLFiles) > 0 {
		rec("admin.crl.loaded", "", crlState(), nil)
	}

	alive := cfg.TPM.CommandTimeout.Duration
	api := broker.New(broker.Config{MaxBody: cfg.API.MaxBody, Health: healthCheck(s, alive), Audit: s.st, CheckClient: rev.Check,
		Identity: policy.IdentityOptions{RoleOID: roleOID(cfg)}, Log: log},
		s.keys, pol, bank)
	loadTLS := func() (*netstack.Material, error) {
		key, err := s.keys.Signer(ctx, cfg.API.TLSKey)
		if errors.Is(err, keys.ErrUnknownKey) {
			return nil, fmt.Errorf("no server key %q in the TPM: this state was not made by brokerd init; initialise a new one", cfg.API.TLSKey)
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
		CheckClient:       rev.Check,
		OnRefused:         handshakeRefused(s, log),
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
	certChanged := make(chan struct{}, 1)
	closeRevoked := func() {
		n := srv.CloseClients(func(chain []*x509.Certificate) bool { return rev.Check(chain) != nil })
		log.Info("revocations in force", "idle_connections_closed", n)
	}
	crlReloaded := func(err error) {
		rec("admin.crl.reload", "", crlState(), err)
		closeRevoked()
	}
	go rev.Watch(ctx, time.Second, crlReloaded)
	d := &daemonState{s: s,
		reloaders: map[fileKind]func() error{
			policyFile: func() error { err := pol.Reload(); policyReloaded(err); return err },
			trustDir:   func() error { err := trust.Reload(); trustReloaded(err); return err },
		},
		reloadTLS: func() error {
			err := srv.Reload()
			select {
			case certChanged <- struct{}{}:
			default:
			}
			return err
		},
		revoked: func() {
			if err := ownRevocations(&revMu, s, ca, rev); err != nil {
				log.Error("revocation", "err", err)
			}
			closeRevoked()
		}}
	adm, err := startAdmin(ctx, s, d, log)
	if err != nil {
		srv.Shutdown(context.Background())
		return err
	}
	defer adm.Close()
	if ca != nil {
		// Renewal uses the state: it ends before the state closes.
		pkiCtx, stopPKI := context.WithCancel(ctx)
		pkiDone := make(chan struct{})
		go func() {
			defer close(pkiDone)
			maintainPKI(pkiCtx, s, ca, srv, rec, certChanged, log)
		}()
		defer func() { stopPKI(); <-pkiDone }()
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
			err := d.reloadTLS()
			if err != nil {
				log.Error("reload: TLS material does not load; keeping the one in use", "err", err)
			}
			rec("admin.tls.reload", "", fmt.Sprintf("server certificate %s, client CAs %s (sha256 %s, %s)",
				cfg.API.TLSCert, cfg.API.ClientCA, fileSHA256(cfg.API.TLSCert), fileSHA256(cfg.API.ClientCA)), err)
			if err = pol.Reload(); err != nil {
				log.Error("reload: policy does not load; keeping the rules in force", "err", err)
			}
			policyReloaded(err)
			if err = trust.Reload(); err != nil {
				log.Error("reload: bank trust does not load; keeping the CAs in use", "err", err)
			}
			trustReloaded(err)
			if err = rev.Reload(); err != nil {
				log.Error("reload: CRL files do not load; keeping the CRLs in force", "err", err)
			}
			if len(cfg.API.CRLFiles) > 0 {
				crlReloaded(err)
			}
			if err := ownRevocations(&revMu, s, ca, rev); err != nil {
				log.Error("reload: revocations", "err", err)
			}
			closeRevoked()
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

// auditKeyID is the TPM key that signs the audit log's checkpoints.
const auditKeyID = "brokerd:audit"

// ensureAuditKey makes the audit key inside the TPM if the state has none.
func ensureAuditKey(ctx context.Context, s *state) error {
	if _, err := s.keys.Info(auditKeyID); !errors.Is(err, keys.ErrUnknownKey) {
		return err
	}
	_, _, err := s.keys.Create(ctx, auditKeyID, tpm.P256, keys.CreateOptions{Internal: true})
	return err
}

// auditSigner signs audit checkpoints and anchors with the audit key.
func auditSigner(ctx context.Context, s *state) (store.SignFunc, error) {
	if err := ensureAuditKey(ctx, s); err != nil {
		return nil, fmt.Errorf("audit key: %w", err)
	}
	signer, err := s.keys.Signer(ctx, auditKeyID)
	if err != nil {
		return nil, fmt.Errorf("audit key: %w", err)
	}
	return func(ctx context.Context, payload []byte) ([]byte, error) {
		digest := sha256.Sum256(payload)
		return signer.Sign(rand.Reader, digest[:], crypto.SHA256)
	}, nil
}

func tpmClock(dev *tpm.Device) store.ClockFunc {
	return func(ctx context.Context) (store.ClockInfo, error) {
		c, err := dev.ReadClock(ctx)
		return store.ClockInfo{Clock: c.Clock, ResetCount: c.ResetCount, RestartCount: c.RestartCount, Safe: c.Safe}, err
	}
}

// checkTPMClock compares the TPM's clock now with the last checkpoint's:
// a TPM whose state was restored from an older copy, or another TPM, shows
// a clock that went back.
func checkTPMClock(ctx context.Context, s *state) error {
	last, err := s.st.LastCheckpoint()
	if err != nil || last == nil {
		return err
	}
	now, err := tpmClock(s.dev)(ctx)
	if err != nil {
		return err
	}
	return store.ClockFollows(last, now)
}

// prune removes audit records older than the retention, every hour.
func prune(ctx context.Context, s *state, retention time.Duration, sign store.SignFunc, log *slog.Logger) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		if n, err := s.st.Prune(ctx, time.Now().Add(-retention), sign); err != nil {
			log.Error("audit retention", "err", err)
		} else if n > 0 {
			log.Info("audit retention: records pruned", "count", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// filesSHA256 is the hex SHA-256 of the files' contents, in order.
func filesSHA256(paths []string) string {
	h := sha256.New()
	for _, p := range paths {
		data, _ := os.ReadFile(p)
		h.Write(data)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// fileSHA256 is the hex SHA-256 of a file's content, or "none" when it
// cannot be read (a missing policy file means no rules).
func fileSHA256(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "none"
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// adminRecorder returns a function that audits an administrative event.
func adminRecorder(s *state, log *slog.Logger, actor string) func(op, keyID, detail string, failed error) {
	return func(op, keyID, detail string, failed error) {
		rec := store.AuditRecord{Op: op, Client: actor, KeyID: keyID, Detail: detail, Status: 200}
		if failed != nil {
			rec.Status, rec.Error = 500, failed.Error()
		}
		if _, err := s.st.Append(context.Background(), rec); err != nil {
			log.Error("audit", "op", op, "err", err)
		}
	}
}

// handshakeRefused audits client certificates refused at the handshake.
func handshakeRefused(s *state, log *slog.Logger) func([]*x509.Certificate, error) {
	return func(presented []*x509.Certificate, reason error) {
		id := policy.IdentityOf(presented)
		rec := store.AuditRecord{Op: "handshake", Client: id.Subject, ClientSHA256: id.Fingerprint, Status: 0, Error: reason.Error()}
		if _, err := s.st.Append(context.Background(), rec); err != nil {
			log.Error("audit", "op", "handshake", "err", err)
		}
	}
}
