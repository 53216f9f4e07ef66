package broker

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/brokerd/brokerd/audit"
	"github.com/brokerd/brokerd/internal/certs"
	"github.com/brokerd/brokerd/keys"
	"github.com/brokerd/brokerd/policy"
)

// sign is POST /sign: {"params":{"data","key_id","hash_algorithm",
// "crypto_algorithm"}} → {"result":"<standard base64 signature>"}.
func (a *API) sign(w http.ResponseWriter, r *http.Request) {
	p, ok := decodeRequest(a, w, r, policy.OpSign, parseSign)
	if !ok {
		return
	}
	sum := sha256.Sum256([]byte(p.Data))
	digest := hex.EncodeToString(sum[:])
	rl := logOf(r)
	rl.add("op", policy.OpSign, "key_id", p.KeyID, "hash", hashName(p.Hash), "alg", string(p.Alg),
		"data_sha256", digest, "data_len", len(p.Data))
	rec := audit.Record{Op: string(policy.OpSign), KeyID: p.KeyID, Alg: string(p.Alg) + "/" + hashName(p.Hash), DataSHA256: digest}

	id := clientOf(r)
	info, names, kerr := a.resolve(p.KeyID)
	rl.label(string(policy.OpSign), keyLabel(info))
	if d := a.auth.Decide(id, policy.Request{Op: policy.OpSign, KeyNames: names}); !d.Allow {
		rl.add("denied", d.Reason)
		a.reply(w, r, rec, failure(forbidden(id, policy.OpSign, p.KeyID)))
		return
	}
	if kerr != nil {
		a.reply(w, r, rec, failure(operationError(kerr, p.KeyID)))
		return
	}
	rec.KeyID = info.ID
	if e := signable(info, p.Data); e != nil {
		rl.add("refused", e.text())
		a.reply(w, r, rec, failure(*e))
		return
	}
	sig, alg, err := a.keys.Sign(r.Context(), info.ID, []byte(p.Data), p.Alg, p.Hash)
	if err != nil {
		rl.add("error", err.Error())
		a.reply(w, r, rec, failure(operationError(err, p.KeyID)))
		return
	}
	rec.Alg = string(alg) + "/" + hashName(p.Hash)
	rl.add("key", info.ID, "signed_alg", string(alg))
	b := append([]byte(`{"result":"`), base64.StdEncoding.EncodeToString(sig)...)
	a.reply(w, r, rec, success(append(b, `"}`...)))
}

// signable refuses what /sign must not sign (keys.Signable).
func signable(info keys.Info, data string) *apiError {
	switch err := keys.Signable(info, []byte(data)); {
	case errors.Is(err, keys.ErrNotForSigning):
		return &apiError{status: http.StatusForbidden, message: "Key not for signing",
			data: fmt.Sprintf("key %q is a QWAC (purpose qwac): it authenticates brokerd to banks in makeRequest and signs no data", info.ID)}
	case err != nil:
		return &apiError{status: http.StatusForbidden, message: "Data refused",
			data: "the data is a TLS 1.3 CertificateVerify content: brokerd signs TLS handshakes only inside makeRequest"}
	}
	return nil
}

// keyLabel names a key for metrics: its id, or "unknown" for a name that
// is no key (a client chooses names; labels must stay few).
func keyLabel(info keys.Info) string {
	if info.ID == "" {
		return "unknown"
	}
	return info.ID
}

// resolve looks a key name up and returns the names policy checks: the
// key's id and aliases, or only the name given when no key has it.
// brokerd's own keys (the server key, the CA key) are never resolved for
// clients.
func (a *API) resolve(name string) (keys.Info, []string, error) {
	if keys.Reserved(name) {
		return keys.Info{}, []string{name}, fmt.Errorf("%w: %q", keys.ErrUnknownKey, name)
	}
	info, err := a.keys.Info(name)
	if err != nil {
		return keys.Info{}, []string{name}, err
	}
	if keys.Reserved(info.ID) {
		return keys.Info{}, []string{name}, fmt.Errorf("%w: %q", keys.ErrUnknownKey, name)
	}
	return info, append([]string{info.ID}, info.Aliases...), nil
}

func forbidden(id policy.Identity, op policy.Op, key string) apiError {
	key = audit.Truncate(key, audit.MaxField)
	return apiError{status: http.StatusForbidden, message: "Forbidden",
		data: fmt.Sprintf("client %s may not use key %q for %s", id.Subject, key, op)}
}

func hashName(h interface{ String() string }) string {
	return strings.ReplaceAll(h.String(), "-", "")
}

// keyEntry is one key of GET /keys: what it is and what its certificate
// says.
type keyEntry struct {
	ID             string       `json:"id"`
	Aliases        []string     `json:"aliases"`
	Kind           keys.Kind    `json:"kind"`
	Algorithm      string       `json:"algorithm"`
	Purpose        keys.Purpose `json:"purpose"`
	Subject        string       `json:"subject,omitempty"`
	Issuer         string       `json:"issuer,omitempty"`
	OrganizationID string       `json:"organization_identifier,omitempty"`
	QcTypes        []string     `json:"qc_types,omitempty"`
	PSD2           *certs.PSD2  `json:"psd2,omitempty"`
	NotBefore      *time.Time   `json:"not_before,omitempty"`
	NotAfter       *time.Time   `json:"not_after,omitempty"`
	X5tS256        string       `json:"x5t#S256,omitempty"`
	SHA1           string       `json:"sha1_fingerprint,omitempty"`
	Chain          []string     `json:"certificate_chain"`
}

// newKeyEntry describes key i with its chain.
func newKeyEntry(i keys.Info, chain []*x509.Certificate) keyEntry {
	e := keyEntry{ID: i.ID, Aliases: i.Aliases, Kind: i.Kind, Algorithm: string(i.Algorithm), Purpose: i.Purpose,
		Subject: i.Subject, Issuer: i.Issuer, OrganizationID: i.OrganizationID, QcTypes: i.QcTypes, PSD2: i.PSD2,
		NotBefore: i.NotBefore, NotAfter: i.NotAfter, X5tS256: i.X5tS256, SHA1: i.SHA1, Chain: []string{}}
	for _, c := range chain {
		e.Chain = append(e.Chain, string(certs.EncodePEM(c)))
	}
	return e
}

// listKeys is GET /keys: the keys this client may use, with their
// certificate chains.
func (a *API) listKeys(w http.ResponseWriter, r *http.Request) {
	infos, err := a.keys.List()
	if err != nil {
		logOf(r).add("error", err.Error())
		writeError(w, apiError{status: http.StatusInternalServerError, message: "Internal server error"})
		return
	}
	id := clientOf(r)
	out := []keyEntry{}
	for _, i := range infos {
		if keys.Reserved(i.ID) || !a.auth.Allowed(id, append([]string{i.ID}, i.Aliases...)) {
			continue
		}
		chain, err := a.keys.Chain(i.ID)
		if err != nil && !errors.Is(err, keys.ErrUnknownKey) {
			logOf(r).add("error", err.Error())
			writeError(w, apiError{status: http.StatusInternalServerError, message: "Internal server error"})
			return
		}
		out = append(out, newKeyEntry(i, chain))
	}
	writeJSON(w, http.StatusOK, map[string]any{"result": out})
}
