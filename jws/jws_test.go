package jws_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/brokerd/brokerd/internal/testpki"
	"github.com/brokerd/brokerd/jws"
)

// softKey is a software key as a jws.Key, for the package's own tests
// (broker's tests sign with TPM keys).
func softKey(t *testing.T, priv crypto.Signer, cert *x509.Certificate) jws.Key {
	t.Helper()
	k := jws.Key{Public: priv.Public(), Sign: func(input []byte, alg jose.SignatureAlgorithm) ([]byte, error) {
		h := map[string]crypto.Hash{"256": crypto.SHA256, "512": crypto.SHA512}[string(alg[2:])]
		d := h.New()
		d.Write(input)
		var opts crypto.SignerOpts = h
		if alg[:2] == "PS" {
			opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: h}
		}
		sig, err := priv.Sign(rand.Reader, d.Sum(nil), opts)
		if err != nil || alg[:2] != "ES" {
			return sig, err
		}
		var rs struct{ R, S *big.Int }
		if _, err := asn1.Unmarshal(sig, &rs); err != nil {
			return nil, err
		}
		return append(rs.R.FillBytes(make([]byte, 32)), rs.S.FillBytes(make([]byte, 32))...), nil
	}}
	if cert != nil {
		k.Chain = []*x509.Certificate{cert}
	}
	return k
}

// selfSigned certifies priv with the Open Banking sample subject.
func selfSigned(t *testing.T, priv crypto.Signer) *x509.Certificate {
	t.Helper()
	atv := func(oid asn1.ObjectIdentifier, v string) pkix.RelativeDistinguishedNameSET {
		return pkix.RelativeDistinguishedNameSET{{Type: oid, Value: v}}
	}
	subject, err := asn1.Marshal(pkix.RDNSequence{atv(asn1.ObjectIdentifier{2, 5, 4, 6}, "GB"), atv(asn1.ObjectIdentifier{2, 5, 4, 10}, "Surgicon Limited"),
		atv(asn1.ObjectIdentifier{2, 5, 4, 97}, "PSDGB-OB-Unknown0015800001041RHAAY"), atv(asn1.ObjectIdentifier{2, 5, 4, 3}, "0015800001041RHAAY")})
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(42), RawSubject: subject, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	return testpki.Create(t, tmpl, tmpl, priv.Public(), priv)
}

var now = time.Unix(1501497671, 0)

// TestOpenBankingHeadersAreExactly: the two Open Banking profiles carry
// exactly the claims COMPAT.md lists, iss from the certificate subject in
// openssl's form, and openssl verifies the signature as PS256 with a
// 32-byte salt over the signing input each version defines.
func TestOpenBankingHeadersAreExactly(t *testing.T) {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	k := softKey(t, priv, selfSigned(t, priv))
	k.TAN = "openbanking.org.uk"
	payload := []byte(`{"Data":{"Initiation":{"InstructionIdentification":"ACME412"}}}`)
	iss := "C = GB, O = Surgicon Limited, organizationIdentifier = PSDGB-OB-Unknown0015800001041RHAAY, CN = 0015800001041RHAAY"
	cases := []struct {
		profile jws.Profile
		header  map[string]json.RawMessage
		want    string
		input   func(h string) []byte
	}{
		{jws.OB314, map[string]json.RawMessage{"kid": json.RawMessage(`"90210ABAD"`)},
			`{"alg":"PS256","crit":["http://openbanking.org.uk/iat","http://openbanking.org.uk/iss","http://openbanking.org.uk/tan"],"http://openbanking.org.uk/iat":1501497671,"http://openbanking.org.uk/iss":"` + iss + `","http://openbanking.org.uk/tan":"openbanking.org.uk","kid":"90210ABAD"}`,
			func(h string) []byte { return []byte(h + "." + base64.RawURLEncoding.EncodeToString(payload)) }},
		{jws.OB313, map[string]json.RawMessage{"kid": json.RawMessage(`"90210ABAD"`), jws.ClaimISS: json.RawMessage(`"0015800001041RHAAY/HQuZPIt3ipkh33Uxytox1E"`)},
			`{"alg":"PS256","b64":false,"crit":["b64","http://openbanking.org.uk/iat","http://openbanking.org.uk/iss","http://openbanking.org.uk/tan"],"http://openbanking.org.uk/iat":1501497671,"http://openbanking.org.uk/iss":"0015800001041RHAAY/HQuZPIt3ipkh33Uxytox1E","http://openbanking.org.uk/tan":"openbanking.org.uk","kid":"90210ABAD"}`,
			func(h string) []byte { return append([]byte(h+"."), payload...) }},
		{jws.OB314, map[string]json.RawMessage{"kid": json.RawMessage(`"90210ABAD"`), "typ": json.RawMessage(`"JOSE"`), "cty": json.RawMessage(`"application/json"`)},
			`{"alg":"PS256","crit":["http://openbanking.org.uk/iat","http://openbanking.org.uk/iss","http://openbanking.org.uk/tan"],"cty":"application/json","http://openbanking.org.uk/iat":1501497671,"http://openbanking.org.uk/iss":"` + iss + `","http://openbanking.org.uk/tan":"openbanking.org.uk","kid":"90210ABAD","typ":"JOSE"}`,
			func(h string) []byte { return []byte(h + "." + base64.RawURLEncoding.EncodeToString(payload)) }},
	}
	for _, c := range cases {
		t.Run(string(c.profile), func(t *testing.T) {
			res, err := jws.Sign(k, payload, jws.Request{Profile: c.profile, Alg: jose.PS256, Header: c.header, Now: now})
			if err != nil {
				t.Fatal(err)
			}
			if string(res.Protected) != c.want {
				t.Errorf("header\n%s\nwant\n%s", res.Protected, c.want)
			}
			parts := strings.Split(res.JWS, ".")
			if len(parts) != 3 || parts[1] != "" || parts[0] != base64.RawURLEncoding.EncodeToString([]byte(c.want)) {
				t.Fatalf("not a detached JWS of that header: %s", res.JWS)
			}
			sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
			opensslVerifyPSS(t, &priv.PublicKey, c.input(parts[0]), sig)
			if _, err := jws.Verify(jws.VerifyRequest{JWS: res.JWS, Payload: payload, Certificate: k.Chain[0], Now: now}); err != nil {
				t.Errorf("Verify: %v", err)
			}
		})
	}
}

// opensslVerifyPSS has openssl check sig over input as RSA-PSS, SHA-256,
// salt 32.
func opensslVerifyPSS(t *testing.T, pub *rsa.PublicKey, input, sig []byte) {
	t.Helper()
	dir := t.TempDir()
	der, _ := x509.MarshalPKIXPublicKey(pub)
	files := map[string][]byte{"pub.pem": pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), "in": input, "sig": sig}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("openssl", "dgst", "-sha256", "-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:32",
		"-verify", "pub.pem", "-signature", "sig", "in")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "Verified OK" {
		t.Errorf("openssl: %s %v", out, err)
	}
}

// TestCompactAndDetachedVerifyWithGoJose: go-jose, verifying on its own,
// accepts the compact and detached JWS of an RSA and an EC key, and the
// header has alg, kid = x5t#S256, x5t#S256, x5c on request and the
// client's claims.
func TestCompactAndDetachedVerifyWithGoJose(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	payload := []byte("hello, bank")
	for _, c := range []struct {
		name    string
		priv    crypto.Signer
		family  string
		h       crypto.Hash
		profile jws.Profile
		alg     jose.SignatureAlgorithm
	}{
		{"rsa default", rsaKey, "", crypto.SHA256, jws.Compact, jose.PS256},
		{"rsa RS512 detached", rsaKey, "RS", crypto.SHA512, jws.Detached, jose.RS512},
		{"rsa PS512", rsaKey, "PS", crypto.SHA512, jws.Compact, jose.PS512},
		{"ec", ecKey, "", crypto.SHA256, jws.Compact, jose.ES256},
		{"ec detached", ecKey, "ES", crypto.SHA256, jws.Detached, jose.ES256},
	} {
		t.Run(c.name, func(t *testing.T) {
			cert := selfSigned(t, c.priv)
			k := softKey(t, c.priv, cert)
			alg, err := jws.ChooseAlg(c.priv.Public(), c.family, c.h, c.profile)
			if err != nil || alg != c.alg {
				t.Fatalf("ChooseAlg = %s, %v; want %s", alg, err, c.alg)
			}
			res, err := jws.Sign(k, payload, jws.Request{Profile: c.profile, Alg: alg, X5C: true, Now: now,
				Header: map[string]json.RawMessage{"typ": json.RawMessage(`"JOSE"`)}})
			if err != nil {
				t.Fatal(err)
			}
			x5t := k.Chain[0]
			want := `{"alg":"` + string(alg) + `","kid":"` + thumb(x5t) + `","typ":"JOSE","x5c":["` + base64.StdEncoding.EncodeToString(cert.Raw) + `"],"x5t#S256":"` + thumb(x5t) + `"}`
			if string(res.Protected) != want {
				t.Errorf("header %s\nwant   %s", res.Protected, want)
			}
			var obj *jose.JSONWebSignature
			if c.profile == jws.Compact {
				obj, err = jose.ParseSignedCompact(res.JWS, []jose.SignatureAlgorithm{alg})
			} else {
				obj, err = jose.ParseDetached(res.JWS, payload, []jose.SignatureAlgorithm{alg})
			}
			if err != nil {
				t.Fatal(err)
			}
			if got, err := obj.Verify(c.priv.Public()); err != nil || string(got) != string(payload) {
				t.Errorf("go-jose Verify: %q, %v", got, err)
			}
		})
	}
}

func thumb(c *x509.Certificate) string {
	h := crypto.SHA256.New()
	h.Write(c.Raw)
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}

// TestSignRefusals: each request that cannot be signed as asked names
// its reason.
func TestSignRefusals(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	for _, c := range []struct {
		name   string
		pub    crypto.PublicKey
		family string
		h      crypto.Hash
		p      jws.Profile
		want   string
	}{
		{"ES with RSA", &rsaKey.PublicKey, "ES", crypto.SHA256, jws.Compact, "algorithm ES is incompatible with an RSA key"},
		{"PS with EC", &ecKey.PublicKey, "PS", crypto.SHA256, jws.Compact, "algorithm PS is incompatible with an EC key"},
		{"ES512", &ecKey.PublicKey, "", crypto.SHA512, jws.Compact, "ECDSA signs JWS as ES256 only: a P-256 key and SHA256 (this key is P-256, the hash SHA-512)"},
		{"P-384", &p384.PublicKey, "", crypto.SHA256, jws.Compact, "this key is P-384"},
		{"OB with RS", &rsaKey.PublicKey, "RS", crypto.SHA256, jws.OB314, "profile ob-3.1.4 signs with PS256 only (RSA-PSS, SHA-256), not RS256"},
		{"OB with SHA512", &rsaKey.PublicKey, "PS", crypto.SHA512, jws.OB313, "profile ob-3.1.3 signs with PS256 only (RSA-PSS, SHA-256), not PS512"},
		{"OB with EC", &ecKey.PublicKey, "", crypto.SHA256, jws.OB314, "profile ob-3.1.4 signs with PS256 only (RSA-PSS, SHA-256), not ES256"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := jws.ChooseAlg(c.pub, c.family, c.h, c.p)
			if !errors.Is(err, jws.ErrRequest) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err %v, want %q", err, c.want)
			}
		})
	}
	k := softKey(t, rsaKey, selfSigned(t, rsaKey))
	bare := softKey(t, rsaKey, nil)
	for _, c := range []struct {
		name string
		k    jws.Key
		r    jws.Request
		want string
	}{
		{"no tan", k, jws.Request{Profile: jws.OB314}, "no http://openbanking.org.uk/tan: give it in header or configure the key (brokerd key config --ob-tan)"},
		{"no iss, no cert", bare, jws.Request{Profile: jws.OB314, Header: map[string]json.RawMessage{jws.ClaimTAN: json.RawMessage(`"t"`)}}, "no http://openbanking.org.uk/iss"},
		{"extra OB claim", k, jws.Request{Profile: jws.OB313, Header: map[string]json.RawMessage{"x5u": json.RawMessage(`"https://x"`)}}, `profile ob-3.1.3 allows only kid, http://openbanking.org.uk/iss, http://openbanking.org.uk/tan, typ and cty in header, not "x5u"`},
		{"OB typ not JOSE", k, jws.Request{Profile: jws.OB314, Header: map[string]json.RawMessage{"typ": json.RawMessage(`"JWT"`)}}, `profile ob-3.1.4 allows typ only as JOSE, not "JWT"`},
		{"OB claim not a string", k, jws.Request{Profile: jws.OB314, Header: map[string]json.RawMessage{jws.ClaimTAN: json.RawMessage(`5`)}}, `header claim "http://openbanking.org.uk/tan" must be a non-empty string`},
		{"x5c with OB", k, jws.Request{Profile: jws.OB314, X5C: true}, "profile ob-3.1.4 allows no x5c"},
		{"x5c without cert", bare, jws.Request{Profile: jws.Compact, X5C: true}, "x5c: the key has no certificate"},
		{"alg in header", k, jws.Request{Profile: jws.Compact, Header: map[string]json.RawMessage{"alg": json.RawMessage(`"none"`)}}, `header claim "alg" is set by the profile`},
		{"crit in header", k, jws.Request{Profile: jws.Detached, Header: map[string]json.RawMessage{"crit": json.RawMessage(`[]`)}}, `header claim "crit" is set by the profile`},
		{"x5t#S256 in header", k, jws.Request{Profile: jws.Compact, Header: map[string]json.RawMessage{"x5t#S256": json.RawMessage(`"forged"`)}}, `header claim "x5t#S256" is set by the profile`},
		{"x5c in header", k, jws.Request{Profile: jws.Detached, Header: map[string]json.RawMessage{"x5c": json.RawMessage(`["AAAA"]`)}}, `header claim "x5c" is set by the profile`},
		{"jku in header", k, jws.Request{Profile: jws.Compact, Header: map[string]json.RawMessage{"jku": json.RawMessage(`"https://evil.example/jwks"`)}}, `header claim "jku" is set by the profile`},
		{"zip in header", k, jws.Request{Profile: jws.Compact, Header: map[string]json.RawMessage{"zip": json.RawMessage(`"DEF"`)}}, `header claim "zip" is set by the profile`},
		{"unknown profile", k, jws.Request{Profile: "ob-9"}, `unknown profile "ob-9"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.r.Alg = jose.PS256
			_, err := jws.Sign(c.k, []byte("x"), c.r)
			if !errors.Is(err, jws.ErrRequest) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err %v, want %q", err, c.want)
			}
		})
	}
}

// TestKIDWithoutCertificate: a key without certificate gets its RFC 7638
// thumbprint as kid and no x5t#S256.
func TestKIDWithoutCertificate(t *testing.T) {
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	res, err := jws.Sign(softKey(t, ecKey, nil), []byte("x"), jws.Request{Profile: jws.Compact, Alg: jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	tp, _ := (&jose.JSONWebKey{Key: ecKey.Public()}).Thumbprint(crypto.SHA256)
	if want := `{"alg":"ES256","kid":"` + base64.RawURLEncoding.EncodeToString(tp) + `"}`; string(res.Protected) != want {
		t.Errorf("header %s, want %s", res.Protected, want)
	}
}
