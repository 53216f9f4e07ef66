package daemon

import (
	"crypto/x509"
	"time"

	"github.com/brokerd/brokerd/config"
	"github.com/brokerd/brokerd/keys"
	"github.com/brokerd/brokerd/policy"
	"github.com/brokerd/brokerd/store"
)

// DecidePolicy returns what the daemon decides for a client that presents
// chain (leaf first; its CA chain may follow) and makes req, and the
// request as decided: req.KeyNames holds the key's name as the client
// gives it and gets the key's other names from the registry. The rules are
// the policy file's, as the daemon puts them in force. d is the running
// daemon, or nil when none runs.
func DecidePolicy(cfg *config.Config, d *Daemon, chain []*x509.Certificate, req policy.Request) (policy.Identity, policy.Request, policy.Decision, error) {
	p, err := policy.Load(cfg.Policy.File)
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
	return id, req, p.Decide(id, req), nil
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
