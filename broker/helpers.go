package broker

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/brokerd/brokerd/audit"
	"github.com/brokerd/brokerd/keys"
	"github.com/brokerd/brokerd/policy"
)

// The signing helpers (/jws, /clientAssertion, /httpsig) sign like /sign
// does, on the same conditions: the policy allows the client the
// operation on the key, the key is no QWAC, and each call is on record,
// with the digest of what was signed, before its answer leaves. Unlike
// /sign they also put the key's certificate into what they build, so a
// key whose certificate has expired (or is not valid yet) is refused.

// signingKey is a key a helper may sign with.
type signingKey struct {
	info  keys.Info
	chain []*x509.Certificate
}

// useKey resolves keyID for op and checks what signing with it needs:
// the policy, the key's existence and purpose, its certificate's
// validity. When one fails it answers (on record) and returns false.
func (a *API) useKey(w http.ResponseWriter, r *http.Request, op policy.Op, keyID string, rec *audit.Record) (signingKey, bool) {
	rl, id := logOf(r), clientOf(r)
	info, names, kerr := a.resolve(keyID)
	rl.label(string(op), keyLabel(info))
	if d := a.auth.Decide(id, policy.Request{Op: op, KeyNames: names}); !d.Allow {
		rl.add("denied", d.Reason)
		a.reply(w, r, *rec, failure(forbidden(id, op, keyID)))
		return signingKey{}, false
	}
	if kerr != nil {
		a.reply(w, r, *rec, failure(operationError(kerr, keyID)))
		return signingKey{}, false
	}
	rec.KeyID = info.ID
	if !info.Purpose.AllowsSign() {
		e := apiError{status: http.StatusForbidden, message: "Key not for signing",
			data: fmt.Sprintf("key %q is a QWAC (purpose qwac): it authenticates brokerd to banks in makeRequest and signs nothing; use a QSealC", info.ID)}
		rl.add("refused", e.text())
		a.reply(w, r, *rec, failure(e))
		return signingKey{}, false
	}
	chain, err := a.keys.Chain(info.ID)
	if err != nil {
		a.reply(w, r, *rec, failure(operationError(err, keyID)))
		return signingKey{}, false
	}
	if e := certificateInForce(info.ID, chain, time.Now()); e != nil {
		rl.add("refused", e.text())
		a.reply(w, r, *rec, failure(*e))
		return signingKey{}, false
	}
	return signingKey{info: info, chain: chain}, true
}

// certificateInForce refuses a key whose leaf certificate is outside its
// validity: what a helper signs carries it, and a bank would refuse it.
func certificateInForce(id string, chain []*x509.Certificate, now time.Time) *apiError {
	if len(chain) == 0 {
		return nil
	}
	switch leaf := chain[0]; {
	case now.After(leaf.NotAfter):
		return &apiError{status: http.StatusForbidden, message: "Certificate expired",
			data: fmt.Sprintf("the certificate of key %q expired on %s: attach a renewed one (brokerd key cert)", id, leaf.NotAfter.UTC().Format(time.RFC3339))}
	case now.Before(leaf.NotBefore):
		return &apiError{status: http.StatusForbidden, message: "Certificate not yet valid",
			data: fmt.Sprintf("the certificate of key %q is valid from %s", id, leaf.NotBefore.UTC().Format(time.RFC3339))}
	}
	return nil
}

// signData signs data with key k as /sign does. useKey refused QWACs;
// keys.Signable's other refusal, a TLS 1.3 CertificateVerify content (64
// spaces first), cannot arise: what the helpers sign starts with base64url
// (JWS), a header name (an HTTP token) or "(request-target)".
func (a *API) signData(ctx context.Context, k signingKey, data []byte, alg keys.SignAlg, h crypto.Hash) ([]byte, error) {
	sig, _, err := a.keys.Sign(ctx, k.info.ID, data, alg, h)
	return sig, err
}

// signFunc signs with the algorithm family and hash a JOSE algorithm
// names (PS256: PS, SHA-256).
func (a *API) signFunc(ctx context.Context, k signingKey) func([]byte, jose.SignatureAlgorithm) ([]byte, error) {
	return func(data []byte, alg jose.SignatureAlgorithm) ([]byte, error) {
		h := crypto.SHA256
		if strings.HasSuffix(string(alg), "512") {
			h = crypto.SHA512
		}
		return a.signData(ctx, k, data, keys.SignAlg(alg[:2]), h)
	}
}

// publicKey is the key's public key.
func (a *API) publicKey(ctx context.Context, k signingKey) (crypto.PublicKey, error) {
	if len(k.chain) > 0 {
		return k.chain[0].PublicKey, nil
	}
	s, err := a.keys.Signer(ctx, k.info.ID)
	if err != nil {
		return nil, err
	}
	return s.Public(), nil
}

// requestRefused answers what a helper cannot build as asked.
func requestRefused(err error, sentinel error) apiError {
	return apiError{status: http.StatusBadRequest, message: "Cannot sign as asked", data: reason(err, sentinel)}
}

// reason is err's message after its sentinel's ("jws: invalid: the
// signature does not verify" → "the signature does not verify").
func reason(err error, sentinel error) string {
	msg := err.Error()
	if i := strings.Index(msg, sentinel.Error()+": "); i >= 0 {
		msg = msg[i+len(sentinel.Error())+2:]
	}
	return msg
}

// helperError maps an error of a helper's signing: the request's own
// fault (sentinel), else the key's.
func helperError(err error, sentinel error, keyID string) apiError {
	if errors.Is(err, sentinel) {
		return requestRefused(err, sentinel)
	}
	return operationError(err, keyID)
}

// sha256Hex is the SHA-256 of data in hex, as audit records hold it.
func sha256Hex(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}
