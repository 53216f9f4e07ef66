package broker

import (
	"crypto"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/brokerd/brokerd/audit"
	"github.com/brokerd/brokerd/internal/certs"
	"github.com/brokerd/brokerd/jws"
	"github.com/brokerd/brokerd/policy"
)

// signJWS is POST /jws: {"params": {"key_id", "payload", "profile",
// "crypto_algorithm", "hash_algorithm", "header", "x5c"}} → {"result":
// {"jws": "...", "protected": {the protected header}}}.
func (a *API) signJWS(w http.ResponseWriter, r *http.Request) {
	p, ok := decodeRequest(a, w, r, policy.OpJWS, parseJWS)
	if !ok {
		return
	}
	digest := sha256Hex([]byte(p.Payload))
	logOf(r).add("op", policy.OpJWS, "key_id", p.KeyID, "profile", string(p.Profile), "payload_sha256", digest, "payload_len", len(p.Payload))
	rec := audit.Record{Op: string(policy.OpJWS), KeyID: p.KeyID, DataSHA256: digest, Detail: "profile " + string(p.Profile)}
	k, ok := a.useKey(w, r, policy.OpJWS, p.KeyID, &rec)
	if !ok {
		return
	}
	key, alg, err := a.joseKey(r, k, p.Family, p.Hash, p.Profile)
	if err == nil {
		rec.Alg = string(alg)
		var res jws.Result
		res, err = jws.Sign(key, []byte(p.Payload), jws.Request{Profile: p.Profile, Alg: alg, Header: p.Header, X5C: p.X5C, Now: time.Now()})
		if err == nil {
			b := append([]byte(`{"result":{"jws":`), pyQuote(nil, res.JWS)...)
			b = append(append(append(b, `,"protected":`...), res.Protected...), "}}"...)
			a.reply(w, r, rec, success(b))
			return
		}
	}
	logOf(r).add("error", err.Error())
	a.reply(w, r, rec, failure(helperError(err, jws.ErrRequest, p.KeyID)))
}

// joseKey is a helper's key as package jws takes it, and the JOSE
// algorithm it signs with.
func (a *API) joseKey(r *http.Request, k signingKey, family string, hash crypto.Hash, profile jws.Profile) (jws.Key, jose.SignatureAlgorithm, error) {
	pub, err := a.publicKey(r.Context(), k)
	if err != nil {
		return jws.Key{}, "", err
	}
	alg, err := jws.ChooseAlg(pub, family, hash, profile)
	if err != nil {
		return jws.Key{}, "", err
	}
	return jws.Key{Public: pub, Chain: k.chain, Sign: a.signFunc(r.Context(), k),
		KID: k.info.JOSE.KID, ISS: k.info.JOSE.OBISS, TAN: k.info.JOSE.OBTAN}, alg, nil
}

// clientAssertion is POST /clientAssertion: {"params": {"key_id",
// "client_id", "audience", "lifetime_s"}} → {"result": "<JWT>"}.
func (a *API) clientAssertion(w http.ResponseWriter, r *http.Request) {
	p, ok := decodeRequest(a, w, r, policy.OpClientAssertion, parseClientAssertion)
	if !ok {
		return
	}
	subject := p.ClientID + " " + p.Audience
	digest := sha256Hex([]byte(subject))
	logOf(r).add("op", policy.OpClientAssertion, "key_id", p.KeyID, "client_id", p.ClientID, "audience", p.Audience)
	rec := audit.Record{Op: string(policy.OpClientAssertion), KeyID: p.KeyID, DataSHA256: digest,
		Detail: audit.Truncate("client_id "+p.ClientID+" audience "+p.Audience, audit.MaxField)}
	k, ok := a.useKey(w, r, policy.OpClientAssertion, p.KeyID, &rec)
	if !ok {
		return
	}
	key, alg, err := a.joseKey(r, k, p.Family, p.Hash, jws.Compact)
	if err == nil {
		rec.Alg = string(alg)
		var out string
		out, err = jws.ClientAssertion(key, alg, jws.Assertion{ClientID: p.ClientID, Audience: p.Audience,
			Lifetime: time.Duration(p.LifetimeS) * time.Second, Now: time.Now()})
		if err == nil {
			a.reply(w, r, rec, success(append(pyQuote([]byte(`{"result":`), out), '}')))
			return
		}
	}
	logOf(r).add("error", err.Error())
	a.reply(w, r, rec, failure(helperError(err, jws.ErrRequest, p.KeyID)))
}

// opJWSVerify names /jws/verify in records and metrics; the policy's
// jws operation allows it.
const opJWSVerify policy.Op = "jws.verify"

// verifyJWS is POST /jws/verify: {"params": {"jws", "payload",
// "certificate" | "jwks"}} → {"result": {"valid": true, "alg", "kid",
// "protected", "payload"}} or {"result": {"valid": false, "reason"}}. It
// uses no key of brokerd's; the policy's jws operation covers it.
func (a *API) verifyJWS(w http.ResponseWriter, r *http.Request) {
	p, ok := decodeRequest(a, w, r, opJWSVerify, parseJWSVerify)
	if !ok {
		return
	}
	rl, id := logOf(r), clientOf(r)
	rl.label(string(opJWSVerify), "")
	rec := audit.Record{Op: string(opJWSVerify), DataSHA256: sha256Hex([]byte(p.JWS))}
	if d := a.auth.Decide(id, policy.Request{Op: policy.OpJWS}); !d.Allow {
		rl.add("denied", d.Reason)
		a.reply(w, r, rec, failure(apiError{status: http.StatusForbidden, message: "Forbidden",
			data: "client " + id.Subject + " may not use jws"}))
		return
	}
	req, e := verifyRequest(p)
	if e != nil {
		a.reply(w, r, rec, failure(*e))
		return
	}
	v, err := jws.Verify(req)
	switch {
	case errors.Is(err, jws.ErrInvalid):
		why := reason(err, jws.ErrInvalid)
		rec.Detail = audit.Truncate("invalid: "+why, audit.MaxField)
		a.reply(w, r, rec, success(append(pyQuote([]byte(`{"result":{"valid":false,"reason":`), why), "}}"...)))
	case err != nil:
		a.reply(w, r, rec, failure(apiError{status: http.StatusBadRequest, message: "Malformed JWS", data: reason(err, jws.ErrMalformed)}))
	default:
		rec.Alg, rec.Detail = string(v.Alg), "valid"
		b := append(pyQuote([]byte(`{"result":{"valid":true,"alg":`), string(v.Alg)), `,"kid":`...)
		b = append(append(append(pyQuote(b, v.KID), `,"protected":`...), v.Protected...), `,"payload":`...)
		a.reply(w, r, rec, success(append(pyQuote(b, strings.ToValidUTF8(string(v.Payload), "\uFFFD")), "}}"...)))
	}
}

// verifyRequest turns /jws/verify's params into a jws.VerifyRequest: one
// of certificate (PEM, leaf first) and jwks.
func verifyRequest(p jwsVerifyParams) (jws.VerifyRequest, *apiError) {
	req := jws.VerifyRequest{JWS: p.JWS, Now: time.Now()}
	if p.Payload != nil {
		req.Payload = []byte(*p.Payload)
	}
	bad := func(msg string) *apiError {
		return &apiError{status: http.StatusBadRequest, message: "Bad verification key", data: msg}
	}
	switch {
	case (p.Certificate == "") == (p.JWKS == nil):
		return req, bad("give exactly one of certificate (PEM) and jwks")
	case p.Certificate != "":
		chain, err := certs.ParsePEM([]byte(p.Certificate))
		if err != nil {
			return req, bad("certificate: " + err.Error())
		}
		req.Certificate = chain[0]
	default:
		set, err := parseJWKS(p.JWKS)
		if err != nil {
			return req, bad(err.Error())
		}
		req.JWKS = set
	}
	return req, nil
}

// parseJWKS reads a JWK Set, skipping the keys it cannot use (another key
// type, a malformed member), as RFC 7517 section 5 asks: a bank's set may
// hold keys of kinds brokerd does not verify with.
func parseJWKS(data []byte) (*jose.JSONWebKeySet, error) {
	var raw struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &raw); err != nil || raw.Keys == nil {
		return nil, errors.New("jwks must be a JSON object with a keys array")
	}
	set := &jose.JSONWebKeySet{}
	for _, k := range raw.Keys {
		var key jose.JSONWebKey
		if key.UnmarshalJSON(k) == nil && key.Valid() && key.IsPublic() {
			set.Keys = append(set.Keys, key)
		}
	}
	if len(set.Keys) == 0 {
		return nil, errors.New("jwks holds no public key brokerd can verify with (RSA or EC)")
	}
	return set, nil
}
