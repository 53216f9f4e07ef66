package daemon

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/brokerd/brokerd/audit"
	"github.com/brokerd/brokerd/config"
	"github.com/brokerd/brokerd/keys"
	"github.com/brokerd/brokerd/pki"
	"github.com/brokerd/brokerd/store"
	"github.com/brokerd/brokerd/tpm"
)

// AuditKeyID is the TPM key that signs the audit log's checkpoints.
const AuditKeyID = keys.ReservedPrefix + "audit"

// State is brokerd's state, opened together: the TPM, the state file, its
// audit log, the key registry and the CA service. The daemon holds one
// while it runs and lends it to the commands of its admin socket; a
// command run while no daemon runs opens its own.
type State struct {
	Config *config.Config
	TPM    *tpm.Device
	Store  *store.Store
	Audit  *audit.Log
	Keys   *keys.Manager
	PKI    *pki.Service
	// lent is set on the copy Lend returns: its Close does nothing.
	lent bool
	// daemon is set on the copy the running daemon lends: the changes
	// made through it are put in force at once.
	daemon *Daemon
}

// OpenState opens the state file, its audit log and the TPM, and loads the
// key registry.
func OpenState(cfg *config.Config, log *slog.Logger) (*State, error) {
	return openState(cfg, log, nil, nil)
}

// openState is OpenState; onCommit hears of the audit log's commits, obs
// of the TPM's commands and waits.
func openState(cfg *config.Config, log *slog.Logger, onCommit func(int, time.Duration), obs tpm.Observer) (*State, error) {
	st, err := store.Open(cfg.StatePath(), store.Options{})
	if err != nil {
		return nil, err
	}
	al, err := audit.OpenWith(st, audit.Options{MinFree: cfg.Audit.MinFree, OnCommit: onCommit})
	if err != nil {
		st.Close()
		return nil, err
	}
	tcfg := cfg.TPMConfig()
	tcfg.Observer = obs
	dev, err := tpm.Open(tcfg, log)
	if err != nil {
		al.Close()
		st.Close()
		return nil, err
	}
	km, err := keys.Open(dev, st, keys.Options{SealPCRs: cfg.TPM.SealPCRs, Log: log})
	if err != nil {
		dev.Close()
		al.Close()
		st.Close()
		return nil, err
	}
	return &State{Config: cfg, TPM: dev, Store: st, Audit: al, Keys: km, PKI: pki.NewService(cfg.PKIConfig(), km, st)}, nil
}

// Lend returns the state for a borrower: its Close leaves the state open.
func (s *State) Lend() *State {
	l := *s
	l.lent = true
	return &l
}

// Close closes the TPM, the audit log and the state file (a lent state
// stays open).
func (s *State) Close() {
	if s.lent {
		return
	}
	s.TPM.Close()
	s.Audit.Close()
	s.Store.Close()
}

// Record audits an administrative change that actor made.
func (s *State) Record(ctx context.Context, actor, op, keyID, detail string) error {
	if _, err := s.Audit.Append(ctx, audit.Record{Op: op, Client: actor, KeyID: keyID, Detail: detail, Status: 200}); err != nil {
		return fmt.Errorf("the change is made but its audit record is not: %w", err)
	}
	return nil
}

// AuditKey returns the key that signs audit checkpoints, made inside the
// TPM if the state has none yet.
func (s *State) AuditKey(ctx context.Context) (crypto.Signer, error) {
	if _, err := s.Keys.Info(AuditKeyID); errors.Is(err, keys.ErrUnknownKey) {
		if _, _, err := s.Keys.Create(ctx, AuditKeyID, tpm.P256, keys.CreateOptions{Internal: true}); err != nil {
			return nil, fmt.Errorf("audit key: %w", err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("audit key: %w", err)
	}
	signer, err := s.Keys.Signer(ctx, AuditKeyID)
	if err != nil {
		return nil, fmt.Errorf("audit key: %w", err)
	}
	return signer, nil
}

// Clock reads the TPM's clock for audit checkpoints.
func (s *State) Clock() audit.ClockFunc {
	return func(ctx context.Context) (audit.ClockInfo, error) {
		c, err := s.TPM.ReadClock(ctx)
		return audit.ClockInfo{Clock: c.Clock, ResetCount: c.ResetCount, RestartCount: c.RestartCount, Safe: c.Safe}, err
	}
}
