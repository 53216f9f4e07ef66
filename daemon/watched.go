package daemon

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/brokerd/brokerd/audit"
	"github.com/brokerd/brokerd/config"
	"github.com/brokerd/brokerd/internal/certs"
	"github.com/brokerd/brokerd/keys"
	"github.com/brokerd/brokerd/netstack/bank"
	"github.com/brokerd/brokerd/policy"
	"github.com/brokerd/brokerd/store"
)

// The command line's changes to the files the daemon watches (the policy
// file, the directory of bank CAs). Each is audited as its actor's and,
// with d, the running daemon, put in force at once; with d nil (no daemon
// runs) it is recorded in cfg's state file.

// PutRule adds or replaces rule r in the policy file. It returns
// warnings: the keys the rule names that no key is called (yet), and a
// rule that anyone of several client CAs could match (see RuleWarnings);
// the rule is saved all the same.
func PutRule(ctx context.Context, cfg *config.Config, d *Daemon, actor string, r policy.Rule) (warnings []string, err error) {
	p, err := policy.Load(cfg.Policy.File)
	if err != nil {
		return nil, err
	}
	if err := p.Put(r); err != nil {
		return nil, err
	}
	if err := p.Save(cfg.Policy.File); err != nil {
		return nil, err
	}
	withState(cfg, d, func(st *store.Store) {
		for _, k := range r.Keys {
			if _, err := keys.Names(st, k); k != "*" && errors.Is(err, keys.ErrUnknownKey) {
				warnings = append(warnings, fmt.Sprintf("no key is called %q (yet): brokerd key list shows the keys", k))
			}
		}
	})
	warnings = append(warnings, RuleWarnings(cfg, []policy.Rule{r})...)
	rule, _ := json.Marshal(r)
	return warnings, fileChanged(ctx, cfg, d, policyFile, actor, "admin.policy.allow", string(rule))
}

// RuleWarnings names the rules that match clients by what any CA can put
// in a certificate (common name, organisational unit, SANs, role URLs,
// PSD2 roles) without pinning the issuer or the certificate, while the
// client CA file holds more than one CA: then each of them can mint a
// certificate the rule lets in.
func RuleWarnings(cfg *config.Config, rules []policy.Rule) []string {
	cas, err := certs.ReadFile(cfg.API.ClientCA)
	if err != nil || len(cas) < 2 {
		return nil
	}
	var out []string
	for _, r := range rules {
		if r.Fingerprint == "" && r.Issuer == "" && !r.AnyClient {
			out = append(out, fmt.Sprintf("rule %q matches clients by %s alone while %s holds %d CAs: any of them can issue such a certificate; pin the issuer with --issuer",
				r.Name, r.Matchers(), cfg.API.ClientCA, len(cas)))
		}
	}
	return out
}

// RemoveRule removes rule name from the policy file.
func RemoveRule(ctx context.Context, cfg *config.Config, d *Daemon, actor, name string) error {
	p, err := policy.Load(cfg.Policy.File)
	if err != nil {
		return err
	}
	if err := p.Remove(name); err != nil {
		return err
	}
	if err := p.Save(cfg.Policy.File); err != nil {
		return err
	}
	return fileChanged(ctx, cfg, d, policyFile, actor, "admin.policy.remove", "rule "+name)
}

// AddTrust trusts the CA cs[0] (its chain may follow) for banks' server
// certificates, for every bank or, with scope, for that origin only. It
// returns the CA's fingerprint.
func AddTrust(ctx context.Context, cfg *config.Config, d *Daemon, actor string, cs []*x509.Certificate, scope string) (string, error) {
	fp, err := bank.AddTrust(cfg.Bank.TrustDir, cs, scope)
	if err != nil {
		return "", err
	}
	where := "every bank"
	if scope != "" {
		where = scope
	}
	return fp, fileChanged(ctx, cfg, d, trustDir, actor, "admin.trust.add", fmt.Sprintf("%s sha256 %s for %s", cs[0].Subject, fp, where))
}

// RemoveTrust stops trusting the CA whose fingerprint starts with prefix
// and returns its fingerprint.
func RemoveTrust(ctx context.Context, cfg *config.Config, d *Daemon, actor, prefix string) (string, error) {
	fp, err := bank.RemoveTrust(cfg.Bank.TrustDir, prefix)
	if err != nil {
		return "", err
	}
	return fp, fileChanged(ctx, cfg, d, trustDir, actor, "admin.trust.remove", "sha256 "+fp)
}

// watched names the files the daemon watches that commands change.
type watched int

const (
	policyFile watched = iota
	trustDir
)

// fileChanged audits a change that actor made to a watched file and, with
// d, puts it in force. Without a daemon the record goes into cfg's state
// file; a state file another process holds (a daemon without its admin
// socket) is left alone: that daemon records the reload when it sees the
// change.
func fileChanged(ctx context.Context, cfg *config.Config, d *Daemon, what watched, actor, op, detail string) error {
	if d != nil {
		if err := d.state.Record(ctx, actor, op, "", detail); err != nil {
			return err
		}
		if what == policyFile {
			return d.ReloadPolicy()
		}
		return d.ReloadTrust()
	}
	st, err := store.Open(cfg.StatePath(), store.Options{})
	if errors.Is(err, store.ErrLocked) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("the change is made but its audit record is not: %w", err)
	}
	defer st.Close()
	log, err := audit.OpenWith(st, audit.Options{MinFree: cfg.Audit.MinFree})
	if err != nil {
		return fmt.Errorf("the change is made but its audit record is not: %w", err)
	}
	defer log.Close()
	if _, err := log.Append(ctx, audit.Record{Op: op, Client: actor, Detail: detail, Status: 200}); err != nil {
		return fmt.Errorf("the change is made but its audit record is not: %w", err)
	}
	return nil
}
