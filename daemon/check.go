package daemon

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"

	"github.com/brokerd/brokerd/config"
	"github.com/brokerd/brokerd/keys"
	"github.com/brokerd/brokerd/policy"
	"github.com/brokerd/brokerd/tpm"
)

// KeyCheck is the outcome of test-signing with one key.
type KeyCheck struct {
	ID      string `json:"id"`
	Kind    string `json:"kind"`
	Alg     string `json:"algorithm"`
	Purpose string `json:"purpose"`
	Error   string `json:"error,omitempty"`
}

// CheckKeys signs a test digest with every key and reports each outcome;
// err is set when the registry cannot be listed.
func (s *State) CheckKeys(ctx context.Context) ([]KeyCheck, error) {
	infos, err := s.Keys.List()
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	digest := sha256.Sum256([]byte("brokerd config check"))
	ctx = tpm.WithClass(ctx, tpm.ClassHousekeeping) // clients' operations first
	out := make([]KeyCheck, 0, len(infos))
	for _, i := range infos {
		kc := KeyCheck{ID: i.ID, Kind: string(i.Kind), Alg: string(i.Algorithm), Purpose: string(i.Purpose)}
		signer, err := s.Keys.Signer(ctx, i.ID)
		if err == nil {
			_, _, err = keys.SignDigest(ctx, signer, digest[:], "", crypto.SHA256)
		}
		if err != nil {
			kc.Error = err.Error()
		}
		out = append(out, kc)
	}
	return out, nil
}

// CheckReport is what Check found.
type CheckReport struct {
	Config   string     `json:"config"`
	TPM      string     `json:"tpm"`
	State    string     `json:"state"`
	Keys     []KeyCheck `json:"keys"`
	Problems []string   `json:"problems"`
	// Warnings are not problems, but an operator should know them: keys
	// whose purpose no certificate says, rules any of several CAs can
	// satisfy.
	Warnings []string `json:"warnings"`
}

// Check validates the configuration file at path, reaches the TPM, opens
// the state and test-signs with every key, and names every problem it
// finds. With d, the running daemon, it checks the daemon's configuration
// and state, and the file as well (it may have changed since the daemon
// started).
func Check(ctx context.Context, path string, d *Daemon, log *slog.Logger) CheckReport {
	rep := CheckReport{Config: path, Keys: []KeyCheck{}, Problems: []string{}, Warnings: []string{}}
	var cfg *config.Config
	if d != nil {
		cfg = d.Config()
		rep.Config = cfg.File()
	}
	loaded, err := config.Load(rep.Config)
	if err != nil {
		var ce *config.Error
		if errors.As(err, &ce) {
			rep.Problems = append(rep.Problems, ce.Problems...)
		} else {
			rep.Problems = append(rep.Problems, err.Error())
		}
		if d != nil {
			rep.Problems = append(rep.Problems, "the daemon runs with the configuration it started with")
		}
	}
	if d == nil {
		if cfg = loaded; cfg == nil {
			return rep
		}
	}
	var s *State
	if d != nil {
		s = d.State()
	} else if s, err = OpenState(cfg, log); err != nil {
		rep.Problems = append(rep.Problems, err.Error())
		return rep
	}
	defer s.Close()
	rep.TPM, rep.State = cfg.TPM.Address, cfg.StatePath()
	checks, err := s.CheckKeys(ctx)
	if err != nil {
		rep.Problems = append(rep.Problems, err.Error())
	}
	for _, k := range checks {
		if k.Error != "" {
			rep.Problems = append(rep.Problems, fmt.Sprintf("key %q: %s", k.ID, k.Error))
		}
		if k.Purpose == string(keys.PurposeAny) && !keys.Reserved(k.ID) {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("key %q has purpose any (no certificate says what it is): it both signs data and authenticates TLS; "+
				"attach its certificate (brokerd key cert) or set --purpose", k.ID))
		}
	}
	rep.Keys = append(rep.Keys, checks...)
	rep.Problems = append(rep.Problems, s.rocaKeys(checks)...)
	if adv, err := s.TPM.Advisories(ctx); err == nil {
		for _, a := range adv {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("known-bad TPM firmware: %s (%s): %s (%s); what to do: %s", a.Name, a.CVE, a.Problem, a.Evidence, a.Advice))
		}
	}
	if p, err := policy.Load(cfg.Policy.File); err == nil {
		rep.Warnings = append(rep.Warnings, RuleWarnings(cfg, p.Rules)...)
	}
	return rep
}

// rocaKeys names the RSA keys whose modulus has the ROCA fingerprint
// (CVE-2017-15361): made by a TPM or smart card with Infineon's flawed
// RSALib, they can be factored from their public key.
func (s *State) rocaKeys(checks []KeyCheck) []string {
	var out []string
	for _, k := range checks {
		pub, err := keys.ReadPublic(s.Store, k.ID)
		if rsaPub, ok := pub.(*rsa.PublicKey); err == nil && ok && tpm.ROCAFingerprint(rsaPub.N) {
			out = append(out, fmt.Sprintf("key %q: %v; replace the key and revoke its certificate", k.ID, tpm.ErrROCA))
		}
	}
	return out
}
