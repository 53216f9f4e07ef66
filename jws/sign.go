package jws

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/brokerd/brokerd/internal/certs"
	"github.com/brokerd/brokerd/internal/dn"
)

// Profile is the header set and serialisation of a JWS.
type Profile string

// Profiles.
const (
	// Compact is header.payload.signature (RFC 7515 section 7.1).
	Compact Profile = "compact"
	// Detached is header..signature (RFC 7515 appendix F).
	Detached Profile = "detached"
	// OB313 is UK Open Banking's x-jws-signature up to v3.1.3: detached,
	// "b64": false (RFC 7797), four crit entries.
	OB313 Profile = "ob-3.1.3"
	// OB314 is UK Open Banking's x-jws-signature from v3.1.4 on: detached,
	// no b64, three crit entries.
	OB314 Profile = "ob-3.1.4"
)

// Profiles lists the profiles, default first.
var Profiles = []Profile{Compact, Detached, OB313, OB314}

// UK Open Banking protected header claims.
const (
	ClaimIAT = "http://openbanking.org.uk/iat"
	ClaimISS = "http://openbanking.org.uk/iss"
	ClaimTAN = "http://openbanking.org.uk/tan"
)

// obCrit are the crit entries of OB314; OB313 puts "b64" first.
var obCrit = []string{ClaimIAT, ClaimISS, ClaimTAN}

// ErrRequest is returned when what was asked cannot be signed as asked
// (an algorithm the profile or the key does not allow, a claim missing
// or not allowed); the message says which.
var ErrRequest = errors.New("jws: request refused")

func refuse(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrRequest, fmt.Sprintf(format, args...))
}

// SignFunc signs a JWS signing input (not a digest) with JOSE algorithm
// alg and returns the signature as JWS carries it (raw r||s for ECDSA).
type SignFunc func(input []byte, alg jose.SignatureAlgorithm) ([]byte, error)

// Key is a signing key and what it says about itself.
type Key struct {
	Public crypto.PublicKey
	// Chain is the key's certificate chain, leaf first; empty for none.
	Chain []*x509.Certificate
	Sign  SignFunc
	// Defaults set per key: kid, and the Open Banking iss and tan.
	KID, ISS, TAN string
}

// Request is what to sign and how.
type Request struct {
	Profile Profile
	Alg     jose.SignatureAlgorithm
	// Header holds extra protected claims, as JSON values by name.
	Header map[string]json.RawMessage
	// X5C puts the certificate chain in the header (compact and detached).
	X5C bool
	Now time.Time
}

// Result is a JWS and its protected header as signed.
type Result struct {
	JWS string
	// Protected is the protected header's JSON, as signed.
	Protected []byte
}

// ChooseAlg names the JOSE algorithm for a key, the /sign algorithm
// family (RS, PS, ES; "" = by key type: PS for RSA, ES for EC) and a hash,
// within what the profile allows.
func ChooseAlg(pub crypto.PublicKey, family string, h crypto.Hash, p Profile) (jose.SignatureAlgorithm, error) {
	bits := map[crypto.Hash]string{crypto.SHA256: "256", crypto.SHA512: "512"}[h]
	if bits == "" {
		return "", refuse("hash %v: want SHA256 or SHA512", h)
	}
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if family == "" {
			family = "PS"
		}
		if family == "ES" {
			return "", refuse("algorithm ES is incompatible with an RSA key")
		}
	case *ecdsa.PublicKey:
		if family != "" && family != "ES" {
			return "", refuse("algorithm %s is incompatible with an EC key", family)
		}
		if k.Curve != elliptic.P256() || h != crypto.SHA256 {
			return "", refuse("ECDSA signs JWS as ES256 only: a P-256 key and SHA256 (this key is %s, the hash %v)", k.Curve.Params().Name, h)
		}
		family = "ES"
	default:
		return "", refuse("unsupported key type %T", pub)
	}
	alg := jose.SignatureAlgorithm(family + bits)
	if (p == OB313 || p == OB314) && alg != jose.PS256 {
		return "", refuse("profile %s signs with PS256 only (RSA-PSS, SHA-256), not %s", p, alg)
	}
	return alg, nil
}

// Sign signs payload as r asks.
func Sign(k Key, payload []byte, r Request) (Result, error) {
	var extra map[jose.HeaderKey]any
	var err error
	switch r.Profile {
	case Compact, Detached:
		extra, err = plainHeader(k, r)
	case OB313, OB314:
		extra, err = obHeader(k, r)
	default:
		return Result{}, refuse("unknown profile %q", r.Profile)
	}
	if err != nil {
		return Result{}, err
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: r.Alg, Key: opaque{k: k, alg: r.Alg}},
		&jose.SignerOptions{ExtraHeaders: extra})
	if err != nil {
		return Result{}, fmt.Errorf("jws: new signer: %w", err)
	}
	obj, err := signer.Sign(payload)
	if err != nil {
		return Result{}, fmt.Errorf("jws: sign: %w", err)
	}
	var out string
	if r.Profile == Compact {
		out, err = obj.CompactSerialize()
	} else {
		out, err = obj.DetachedCompactSerialize()
	}
	if err != nil {
		return Result{}, fmt.Errorf("jws: serialize: %w", err)
	}
	protected, err := base64.RawURLEncoding.DecodeString(out[:strings.IndexByte(out, '.')])
	if err != nil {
		return Result{}, fmt.Errorf("jws: read back the header: %w", err)
	}
	return Result{JWS: out, Protected: protected}, nil
}

// reserved are header names a client may not set: the serialisation and
// the algorithm are the profile's and the key's, the key and certificate
// references are what brokerd knows of the key (a client's would bind the
// signature to a key or certificate that did not make it), and zip and enc
// are JWE's.
var reserved = []string{"alg", "crit", "b64", "jwk", "jku", "x5c", "x5u", "x5t", "x5t#S256", "zip", "enc"}

// plainHeader is the header of Compact and Detached: kid, x5t#S256 when
// the key has a certificate, x5c on request, then the client's claims.
func plainHeader(k Key, r Request) (map[jose.HeaderKey]any, error) {
	h := map[jose.HeaderKey]any{}
	kid, err := defaultKID(k)
	if err != nil {
		return nil, err
	}
	h["kid"] = kid
	if len(k.Chain) > 0 {
		h["x5t#S256"] = certs.X5tS256(k.Chain[0])
	}
	if r.X5C {
		if len(k.Chain) == 0 {
			return nil, refuse("x5c: the key has no certificate")
		}
		x5c := make([]string, len(k.Chain))
		for i, c := range k.Chain {
			x5c[i] = base64.StdEncoding.EncodeToString(c.Raw)
		}
		h["x5c"] = x5c
	}
	for name, v := range r.Header {
		if slices.Contains(reserved, name) {
			return nil, refuse("header claim %q is set by the profile, not by the client", name)
		}
		h[jose.HeaderKey(name)] = v
	}
	return h, nil
}

// obOptional are the claims the Open Banking profile lets a signer add,
// with the values it allows.
var obOptional = map[string][]string{"typ": {"JOSE"}, "cty": {"json", "application/json"}}

// obHeader is the Open Banking header: kid, iat, iss, tan, crit (and b64
// for v3.1.3), and typ and cty when header gives them; nothing else.
// header may give kid, iss, tan, typ and cty.
func obHeader(k Key, r Request) (map[jose.HeaderKey]any, error) {
	if r.X5C {
		return nil, refuse("profile %s allows no x5c: its header holds only the Open Banking claims", r.Profile)
	}
	claim := map[string]string{"kid": k.KID, ClaimISS: k.ISS, ClaimTAN: k.TAN}
	optional := map[string]string{}
	for name, v := range r.Header {
		allowed, isOptional := obOptional[name]
		if _, ok := claim[name]; !ok && !isOptional {
			return nil, refuse("profile %s allows only kid, %s, %s, typ and cty in header, not %q", r.Profile, ClaimISS, ClaimTAN, name)
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil || s == "" {
			return nil, refuse("header claim %q must be a non-empty string", name)
		}
		if isOptional {
			if !slices.Contains(allowed, s) {
				return nil, refuse("profile %s allows %s only as %s, not %q", r.Profile, name, strings.Join(allowed, " or "), s)
			}
			optional[name] = s
			continue
		}
		claim[name] = s
	}
	if claim["kid"] == "" {
		kid, err := defaultKID(k)
		if err != nil {
			return nil, err
		}
		claim["kid"] = kid
	}
	if claim[ClaimISS] == "" {
		if len(k.Chain) == 0 {
			return nil, refuse("no %s: give it in header or configure the key (brokerd key config --ob-iss); the key has no certificate to take the subject from", ClaimISS)
		}
		claim[ClaimISS] = dn.OpenSSL(k.Chain[0].RawSubject)
	}
	if claim[ClaimTAN] == "" {
		return nil, refuse("no %s: give it in header or configure the key (brokerd key config --ob-tan)", ClaimTAN)
	}
	h := map[jose.HeaderKey]any{"kid": claim["kid"], ClaimIAT: r.Now.Unix(), ClaimISS: claim[ClaimISS], ClaimTAN: claim[ClaimTAN]}
	for name, v := range optional {
		h[jose.HeaderKey(name)] = v
	}
	if r.Profile == OB313 {
		h["b64"] = false
		h["crit"] = append([]string{"b64"}, obCrit...)
	} else {
		h["crit"] = slices.Clone(obCrit)
	}
	return h, nil
}

// defaultKID is the key's configured kid, else its certificate's
// x5t#S256, else its RFC 7638 JWK thumbprint.
func defaultKID(k Key) (string, error) {
	switch {
	case k.KID != "":
		return k.KID, nil
	case len(k.Chain) > 0:
		return certs.X5tS256(k.Chain[0]), nil
	}
	jwk := jose.JSONWebKey{Key: k.Public}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("jws: key thumbprint: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(tp), nil
}

// opaque is a Key as go-jose's OpaqueSigner: go-jose builds the header
// and the signing input, the key's SignFunc signs.
type opaque struct {
	k   Key
	alg jose.SignatureAlgorithm
}

// Public is the key's public JWK, without kid: the header's kid is set
// with the other claims.
func (o opaque) Public() *jose.JSONWebKey { return &jose.JSONWebKey{Key: o.k.Public} }

// Algs is the one algorithm the key signs with here.
func (o opaque) Algs() []jose.SignatureAlgorithm { return []jose.SignatureAlgorithm{o.alg} }

// SignPayload signs the signing input go-jose built.
func (o opaque) SignPayload(input []byte, alg jose.SignatureAlgorithm) ([]byte, error) {
	return o.k.Sign(input, alg)
}
