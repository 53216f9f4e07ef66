package daemon

import (
	"crypto/x509"
	"fmt"
	"time"

	"github.com/brokerd/brokerd/config"
	"github.com/brokerd/brokerd/internal/certs"
	"github.com/brokerd/brokerd/keys"
	"github.com/brokerd/brokerd/pki"
	"github.com/brokerd/brokerd/policy"
	"github.com/brokerd/brokerd/store"
)

// DecidePolicy returns what the daemon decides for a client that presents
// chain (leaf first; its CA chain may follow) and makes req, and the
// request as decided: req.KeyNames holds the key's name as the client
// gives it and gets the key's other names from the registry. As at a
// handshake, a certificate that does not verify against the client CAs,
// or is revoked (by brokerd's CA or on a CRL file), is denied; then the
// rules decide, the policy file's, as the daemon puts them in force. d is
// the running daemon, or nil when none runs.
func DecidePolicy(cfg *config.Config, d *Daemon, chain []*x509.Certificate, req policy.Request) (policy.Identity, policy.Request, policy.Decision, error) {
	p, err := policy.Load(cfg.Policy.File)
	if err != nil {
		return policy.Identity{}, req, policy.Decision{}, err
	}
	refused, err := handshakeRefusal(cfg, d, chain)
	if err != nil {
		return policy.Identity{}, req, policy.Decision{}, err
	}
	if len(req.KeyNames) == 1 {
		withState(cfg, d, func(st *store.Store) {
			if names, err := keys.Names(st, req.KeyNames[0]); err == nil {
				req.KeyNames = names
			}
		})
	}
	id := policy.IdentityOptions{RoleOID: cfg.RoleOID()}.Of(chain)
	if refused != nil {
		return id, req, policy.Decision{Reason: refused.Error()}, nil
	}
	return id, req, p.Decide(id, req), nil
}

// handshakeRefusal returns why the daemon would refuse chain at a
// handshake, or nil: it must verify against the client CAs for client
// authentication, and no certificate of the verified chain may be
// revoked. err is set when the client CAs or the revocations cannot be
// read.
func handshakeRefusal(cfg *config.Config, d *Daemon, presented []*x509.Certificate) (refused, err error) {
	cas, err := certs.ReadFile(cfg.API.ClientCA)
	if err != nil {
		return nil, fmt.Errorf("client CAs: %w", err)
	}
	rev := (*pki.Revocations)(nil)
	if d != nil {
		rev = d.rev
	} else {
		if rev, err = pki.NewRevocations(cfg.API.CRLFiles, nil); err != nil {
			return nil, err
		}
		withState(cfg, nil, func(st *store.Store) { err = pki.ApplyOwnFrom(st, rev) })
		if err != nil {
			return nil, err
		}
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, c := range cas {
		roots.AddCert(c)
	}
	for _, c := range presented[1:] {
		inter.AddCert(c)
	}
	chains, err := presented[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		return fmt.Errorf("the daemon refuses this certificate at the handshake: %w", err), nil
	}
	return rev.Check(chains[0]), nil
}

// withState runs fn on the running daemon's state file or, when no daemon
// runs, on cfg's opened read-only; not at all when it cannot be opened (a
// process without an admin socket holds it, say).
func withState(cfg *config.Config, d *Daemon, fn func(*store.Store)) {
	if d != nil {
		fn(d.state.Store)
		return
	}
	st, err := store.Open(cfg.StatePath(), store.Options{ReadOnly: true, Timeout: 2 * time.Second})
	if err != nil {
		return
	}
	defer st.Close()
	fn(st)
}
