package jws

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

var (
	// ErrMalformed is returned for a JWS that does not parse (its parts,
	// base64url, the header's JSON) or a request missing what the JWS
	// needs (the payload of a detached JWS, a key).
	ErrMalformed = errors.New("jws: malformed")
	// ErrInvalid is returned for a well-formed JWS that does not hold: a
	// signature that does not verify, an algorithm not allowed, a critical
	// claim not understood, an iat in the future.
	ErrInvalid = errors.New("jws: invalid")
)

// verifyAlgs are the algorithms Verify accepts: never "none" nor an HMAC.
var verifyAlgs = []jose.SignatureAlgorithm{jose.PS256, jose.PS384, jose.PS512, jose.RS256, jose.RS384, jose.RS512, jose.ES256, jose.ES384, jose.ES512}

// understoodCrit are the critical claims Verify checks.
var understoodCrit = []string{"b64", ClaimIAT, ClaimISS, ClaimTAN}

// iatSkew is how far in the future an Open Banking iat may be: the
// signer's clock may run ahead of ours.
const iatSkew = time.Minute

// VerifyRequest is a JWS to check and the keys to check it with.
type VerifyRequest struct {
	// JWS is compact (header.payload.signature) or detached
	// (header..signature).
	JWS string
	// Payload is the payload of a detached JWS (the HTTP body); nil for a
	// compact one.
	Payload []byte
	// Certificate (its public key) or JWKS (the keys whose kid is the
	// header's, or all when the header has none) verify the signature.
	Certificate *x509.Certificate
	JWKS        *jose.JSONWebKeySet
	Now         time.Time
}

// Verified is what a valid JWS says.
type Verified struct {
	// Protected is the protected header's JSON, as signed.
	Protected []byte
	Payload   []byte
	Alg       jose.SignatureAlgorithm
	KID       string
}

// header is the protected header's members that Verify reads.
type header struct {
	Alg  jose.SignatureAlgorithm
	KID  string
	Crit []string
	B64  *bool
	IAT  *int64
	// present names every member of the header.
	present map[string]bool
}

// Verify checks a JWS (RFC 7515, with RFC 7797's unencoded payload and
// the UK Open Banking critical claims): hand-built because go-jose
// refuses every critical header but b64, which is every bank's response
// signature in UK Open Banking.
func Verify(r VerifyRequest) (Verified, error) {
	parts := strings.Split(r.JWS, ".")
	if len(parts) != 3 {
		return Verified{}, fmt.Errorf("%w: a JWS has 3 parts separated by dots, this one %d", ErrMalformed, len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return Verified{}, fmt.Errorf("%w: header: %w", ErrMalformed, err)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return Verified{}, fmt.Errorf("%w: signature: %w", ErrMalformed, err)
	}
	h, err := parseHeader(raw)
	if err != nil {
		return Verified{}, err
	}
	v := Verified{Protected: raw, Alg: h.Alg, KID: h.KID}
	b64 := h.B64 == nil || *h.B64
	if v.Payload, err = payloadOf(parts[1], r.Payload, b64); err != nil {
		return Verified{}, err
	}
	if err := checkClaims(h, r.Now); err != nil {
		return Verified{}, err
	}
	input := []byte(parts[0] + ".")
	if b64 {
		input = append(input, base64.RawURLEncoding.EncodeToString(v.Payload)...)
	} else {
		input = append(input, v.Payload...)
	}
	keys, err := candidates(r, h.KID)
	if err != nil {
		return Verified{}, err
	}
	for _, k := range keys {
		if checkSignature(k, h.Alg, input, sig) == nil {
			return v, nil
		}
	}
	return Verified{}, fmt.Errorf("%w: the signature does not verify with %s", ErrInvalid, describeKeys(r, len(keys)))
}

// parseHeader decodes the protected header: a JSON object with a string
// alg, whose members Verify reads have their types (the errors say so
// in words, not in Go's).
func parseHeader(raw []byte) (header, error) {
	var members map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&members); err != nil || members == nil {
		return header{}, fmt.Errorf("%w: the header is not a JSON object", ErrMalformed)
	}
	if dec.More() {
		return header{}, fmt.Errorf("%w: header has data after its JSON object", ErrMalformed)
	}
	h := header{present: map[string]bool{}}
	for name := range members {
		h.present[name] = true
	}
	var alg string
	fields := []struct {
		name string
		into any
		want string
	}{{"alg", &alg, "a string"}, {"kid", &h.KID, "a string"}, {"crit", &h.Crit, "an array of strings"}, {"b64", &h.B64, "true or false"},
		{ClaimIAT, &h.IAT, "an integer"}, {ClaimISS, new(string), "a string"}, {ClaimTAN, new(string), "a string"}}
	for _, f := range fields {
		v, ok := members[f.name]
		if !ok {
			continue
		}
		if err := json.Unmarshal(v, f.into); err != nil || bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
			return header{}, fmt.Errorf("%w: header member %s must be %s", ErrMalformed, f.name, f.want)
		}
	}
	if alg == "" {
		return header{}, fmt.Errorf("%w: header has no alg", ErrMalformed)
	}
	h.Alg = jose.SignatureAlgorithm(alg)
	return h, nil
}

// payloadOf is the payload: the given one for a detached JWS (which must
// equal an attached one), else the attached one decoded.
func payloadOf(attached string, given []byte, b64 bool) ([]byte, error) {
	switch {
	case attached == "" && given == nil:
		return nil, fmt.Errorf("%w: the JWS is detached: give the payload it signs", ErrMalformed)
	case attached == "":
		return given, nil
	case !b64:
		return nil, fmt.Errorf("%w: an unencoded payload (b64 false) must be detached", ErrMalformed)
	}
	p, err := base64.RawURLEncoding.DecodeString(attached)
	if err != nil {
		return nil, fmt.Errorf("%w: payload: %w", ErrMalformed, err)
	}
	if given != nil && !bytes.Equal(p, given) {
		return nil, fmt.Errorf("%w: the payload given is not the one the JWS carries", ErrInvalid)
	}
	return p, nil
}

// checkClaims checks the algorithm, the critical claims and the Open
// Banking iat.
func checkClaims(h header, now time.Time) error {
	if !slices.Contains(verifyAlgs, h.Alg) {
		return fmt.Errorf("%w: algorithm %q is not allowed (want one of %v)", ErrInvalid, h.Alg, verifyAlgs)
	}
	if h.Crit != nil && len(h.Crit) == 0 {
		return fmt.Errorf("%w: crit is empty (RFC 7515 section 4.1.11)", ErrInvalid)
	}
	for _, c := range h.Crit {
		if !slices.Contains(understoodCrit, c) {
			return fmt.Errorf("%w: critical claim %q is not understood", ErrInvalid, c)
		}
		if !h.present[c] {
			return fmt.Errorf("%w: %s is critical but absent", ErrInvalid, c)
		}
	}
	if h.B64 != nil && !slices.Contains(h.Crit, "b64") {
		return fmt.Errorf("%w: b64 is set but not listed in crit (RFC 7797 section 6)", ErrInvalid)
	}
	if h.IAT != nil && time.Unix(*h.IAT, 0).After(now.Add(iatSkew)) {
		return fmt.Errorf("%w: %s %d is in the future", ErrInvalid, ClaimIAT, *h.IAT)
	}
	return nil
}

// candidates are the public keys that may have signed.
func candidates(r VerifyRequest, kid string) ([]crypto.PublicKey, error) {
	switch {
	case r.Certificate != nil:
		return []crypto.PublicKey{r.Certificate.PublicKey}, nil
	case r.JWKS != nil:
		var out []crypto.PublicKey
		for _, k := range r.JWKS.Keys {
			if (kid == "" || k.KeyID == kid) && k.Valid() {
				out = append(out, k.Key)
			}
		}
		if len(out) == 0 {
			return nil, fmt.Errorf("%w: no key of the JWKS has kid %q", ErrInvalid, kid)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%w: give a certificate or a JWKS to verify with", ErrMalformed)
}

func describeKeys(r VerifyRequest, n int) string {
	if r.Certificate != nil {
		return "the certificate's key"
	}
	return fmt.Sprintf("the JWKS's %d candidate key(s)", n)
}

// checkSignature verifies sig over input with pub and alg; PSS salts are
// the hash length, as RFC 7518 and UK Open Banking require.
func checkSignature(pub crypto.PublicKey, alg jose.SignatureAlgorithm, input, sig []byte) error {
	h := map[string]crypto.Hash{"256": crypto.SHA256, "384": crypto.SHA384, "512": crypto.SHA512}[string(alg[2:])]
	d := h.New()
	d.Write(input)
	digest := d.Sum(nil)
	switch k := pub.(type) {
	case *rsa.PublicKey:
		switch alg[:2] {
		case "RS":
			return rsa.VerifyPKCS1v15(k, h, digest, sig)
		case "PS":
			return rsa.VerifyPSS(k, h, digest, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		}
	case *ecdsa.PublicKey:
		size := (k.Curve.Params().BitSize + 7) / 8
		want := map[jose.SignatureAlgorithm]int{jose.ES256: 32, jose.ES384: 48, jose.ES512: 66}[alg]
		if alg[:2] != "ES" || size != want || len(sig) != 2*size {
			return errors.New("not this key's algorithm")
		}
		r, s := new(big.Int).SetBytes(sig[:size]), new(big.Int).SetBytes(sig[size:])
		if ecdsa.Verify(k, digest, r, s) {
			return nil
		}
		return errors.New("ecdsa: verification error")
	}
	return errors.New("not this key's algorithm")
}
