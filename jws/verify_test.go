package jws_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/brokerd/brokerd/jws"
)

// TestVerify: go-jose's signatures verify, against a certificate and a
// JWKS; each way a JWS can fail says why, as malformed or invalid.
func TestVerify(t *testing.T) {
	priv, _ := rsa.GenerateKey(rand.Reader, 2048)
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	cert := selfSigned(t, priv)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.PS256, Key: priv}, (&jose.SignerOptions{}).WithHeader("kid", "k1"))
	if err != nil {
		t.Fatal(err)
	}
	obj, _ := signer.Sign([]byte("body"))
	compact, _ := obj.CompactSerialize()
	detached, _ := obj.DetachedCompactSerialize()
	jwks := &jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &other.PublicKey, KeyID: "k0"}, {Key: &priv.PublicKey, KeyID: "k1"}}}
	wrongSet := &jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &other.PublicKey, KeyID: "k1"}}}
	hdr := func(h string) string { return base64.RawURLEncoding.EncodeToString([]byte(h)) }
	sig := compact[strings.LastIndexByte(compact, '.')+1:]
	for _, c := range []struct {
		name    string
		r       jws.VerifyRequest
		wantErr error
		msg     string
	}{
		{"compact, certificate", jws.VerifyRequest{JWS: compact, Certificate: cert}, nil, ""},
		{"compact, JWKS by kid", jws.VerifyRequest{JWS: compact, JWKS: jwks}, nil, ""},
		{"detached", jws.VerifyRequest{JWS: detached, Payload: []byte("body"), Certificate: cert}, nil, ""},
		{"detached, other body", jws.VerifyRequest{JWS: detached, Payload: []byte("bodY"), Certificate: cert}, jws.ErrInvalid, "the signature does not verify with the certificate's key"},
		{"compact, other payload given", jws.VerifyRequest{JWS: compact, Payload: []byte("x"), Certificate: cert}, jws.ErrInvalid, "the payload given is not the one the JWS carries"},
		{"wrong key in JWKS", jws.VerifyRequest{JWS: compact, JWKS: wrongSet}, jws.ErrInvalid, "the JWKS's 1 candidate key(s)"},
		{"no kid match", jws.VerifyRequest{JWS: compact, JWKS: &jose.JSONWebKeySet{Keys: jwks.Keys[:1]}}, jws.ErrInvalid, `no key of the JWKS has kid "k1"`},
		{"detached without payload", jws.VerifyRequest{JWS: detached, Certificate: cert}, jws.ErrMalformed, "the JWS is detached: give the payload it signs"},
		{"no key", jws.VerifyRequest{JWS: compact}, jws.ErrMalformed, "give a certificate or a JWKS"},
		{"two parts", jws.VerifyRequest{JWS: "a.b", Certificate: cert}, jws.ErrMalformed, "a JWS has 3 parts separated by dots, this one 2"},
		{"header not base64url", jws.VerifyRequest{JWS: "a+b..c", Certificate: cert}, jws.ErrMalformed, "header:"},
		{"header not JSON", jws.VerifyRequest{JWS: hdr("[1]") + ".." + sig, Payload: []byte("x"), Certificate: cert}, jws.ErrMalformed, "the header is not a JSON object"},
		{"alg a number", jws.VerifyRequest{JWS: hdr(`{"alg":5}`) + ".." + sig, Payload: []byte("x"), Certificate: cert}, jws.ErrMalformed, "header member alg must be a string"},
		{"crit a string", jws.VerifyRequest{JWS: hdr(`{"alg":"PS256","crit":"b64","b64":false}`) + ".." + sig, Payload: []byte("x"), Certificate: cert}, jws.ErrMalformed, "header member crit must be an array of strings"},
		{"crit empty", jws.VerifyRequest{JWS: hdr(`{"alg":"PS256","crit":[]}`) + ".." + sig, Payload: []byte("x"), Certificate: cert}, jws.ErrInvalid, "crit is empty"},
		{"iss critical, absent", jws.VerifyRequest{JWS: hdr(`{"alg":"PS256","crit":["http://openbanking.org.uk/iss"]}`) + ".." + sig, Payload: []byte("x"), Certificate: cert}, jws.ErrInvalid, "http://openbanking.org.uk/iss is critical but absent"},
		{"b64 critical, absent", jws.VerifyRequest{JWS: hdr(`{"alg":"PS256","crit":["b64"]}`) + ".." + sig, Payload: []byte("x"), Certificate: cert}, jws.ErrInvalid, "b64 is critical but absent"},
		{"iss not a string", jws.VerifyRequest{JWS: hdr(`{"alg":"PS256","http://openbanking.org.uk/iss":5}`) + ".." + sig, Payload: []byte("x"), Certificate: cert}, jws.ErrMalformed, "header member http://openbanking.org.uk/iss must be a string"},
		{"tan null", jws.VerifyRequest{JWS: hdr(`{"alg":"PS256","http://openbanking.org.uk/tan":null}`) + ".." + sig, Payload: []byte("x"), Certificate: cert}, jws.ErrMalformed, "header member http://openbanking.org.uk/tan must be a string"},
		{"iat a string", jws.VerifyRequest{JWS: hdr(`{"alg":"PS256","http://openbanking.org.uk/iat":"2099"}`) + ".." + sig, Payload: []byte("x"), Certificate: cert}, jws.ErrMalformed, "header member http://openbanking.org.uk/iat must be an integer"},
		{"no alg", jws.VerifyRequest{JWS: hdr(`{"kid":"x"}`) + ".." + sig, Payload: []byte("x"), Certificate: cert}, jws.ErrMalformed, "header has no alg"},
		{"alg none", jws.VerifyRequest{JWS: hdr(`{"alg":"none"}`) + ".." + sig, Payload: []byte("x"), Certificate: cert}, jws.ErrInvalid, `algorithm "none" is not allowed`},
		{"alg HS256", jws.VerifyRequest{JWS: hdr(`{"alg":"HS256"}`) + ".." + sig, Payload: []byte("x"), Certificate: cert}, jws.ErrInvalid, `algorithm "HS256" is not allowed`},
		{"unknown crit", jws.VerifyRequest{JWS: hdr(`{"alg":"PS256","crit":["exp"]}`) + ".." + sig, Payload: []byte("x"), Certificate: cert}, jws.ErrInvalid, `critical claim "exp" is not understood`},
		{"b64 not in crit", jws.VerifyRequest{JWS: hdr(`{"alg":"PS256","b64":false}`) + ".." + sig, Payload: []byte("x"), Certificate: cert}, jws.ErrInvalid, "b64 is set but not listed in crit"},
		{"iat critical, absent", jws.VerifyRequest{JWS: hdr(`{"alg":"PS256","crit":["http://openbanking.org.uk/iat"]}`) + ".." + sig, Payload: []byte("x"), Certificate: cert}, jws.ErrInvalid, "http://openbanking.org.uk/iat is critical but absent"},
		{"iat in the future", jws.VerifyRequest{JWS: hdr(`{"alg":"PS256","http://openbanking.org.uk/iat":1501497900}`) + ".." + sig, Payload: []byte("x"), Certificate: cert, Now: now}, jws.ErrInvalid, "http://openbanking.org.uk/iat 1501497900 is in the future"},
		{"iat not integer", jws.VerifyRequest{JWS: hdr(`{"alg":"PS256","http://openbanking.org.uk/iat":1.5}`) + ".." + sig, Payload: []byte("x"), Certificate: cert}, jws.ErrMalformed, "header member http://openbanking.org.uk/iat must be an integer"},
		{"unencoded attached", jws.VerifyRequest{JWS: hdr(`{"alg":"PS256","b64":false,"crit":["b64"]}`) + ".eA." + sig, Certificate: cert}, jws.ErrMalformed, "an unencoded payload (b64 false) must be detached"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.r.Now.IsZero() {
				c.r.Now = time.Now()
			}
			v, err := jws.Verify(c.r)
			if c.wantErr == nil {
				if err != nil || string(v.Payload) != "body" || v.Alg != jose.PS256 || v.KID != "k1" {
					t.Errorf("Verify = %+v, %v", v, err)
				}
				return
			}
			if !errors.Is(err, c.wantErr) || !strings.Contains(err.Error(), c.msg) {
				t.Errorf("err %v, want %v containing %q", err, c.wantErr, c.msg)
			}
			if strings.Contains(err.Error(), "Go ") || strings.Contains(err.Error(), "json:") {
				t.Errorf("err %v speaks of Go's internals", err)
			}
		})
	}
}

// TestClientAssertion: go-jose's JWT parser verifies the assertion; its
// claims and header are exactly those of RFC 7523's private_key_jwt.
func TestClientAssertion(t *testing.T) {
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cert := selfSigned(t, ecKey)
	k := softKey(t, ecKey, cert)
	out, err := jws.ClientAssertion(k, jose.ES256, jws.Assertion{ClientID: "tpp-42", Audience: "https://as.bank/token", Lifetime: 90 * time.Second, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.ParseSigned(out, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := tok.Claims(ecKey.Public(), &claims); err != nil {
		t.Fatalf("go-jose: %v", err)
	}
	jti, _ := claims["jti"].(string)
	if len(jti) != 32 || claims["iss"] != "tpp-42" || claims["sub"] != "tpp-42" || claims["aud"] != "https://as.bank/token" ||
		claims["iat"] != float64(now.Unix()) || claims["exp"] != float64(now.Unix()+90) || len(claims) != 6 {
		t.Errorf("claims %v", claims)
	}
	h := tok.Headers[0]
	raw, _ := base64.RawURLEncoding.DecodeString(out[:strings.IndexByte(out, '.')])
	if want := `{"alg":"ES256","kid":"` + thumb(cert) + `","typ":"JWT","x5t#S256":"` + thumb(cert) + `"}`; string(raw) != want || h.KeyID != thumb(cert) {
		t.Errorf("header %s, want %s", raw, want)
	}
	again, _ := jws.ClientAssertion(k, jose.ES256, jws.Assertion{ClientID: "tpp-42", Audience: "a", Now: now})
	tok2, _ := jwt.ParseSigned(again, []jose.SignatureAlgorithm{jose.ES256})
	var c2 map[string]any
	if err := tok2.Claims(ecKey.Public(), &c2); err != nil || c2["jti"] == jti || c2["exp"] != float64(now.Unix()+300) {
		t.Errorf("second assertion: %v, %v (jti must differ, default lifetime 300 s)", c2, err)
	}
	for _, c := range []struct {
		a    jws.Assertion
		want string
	}{
		{jws.Assertion{Audience: "a"}, "client_id is empty"},
		{jws.Assertion{ClientID: "c"}, "audience is empty"},
		{jws.Assertion{ClientID: "c", Audience: "a", Lifetime: 2 * time.Hour}, "lifetime_s must be 1 to 3600 seconds"},
		{jws.Assertion{ClientID: "c", Audience: "a", Lifetime: -time.Second}, "lifetime_s must be 1 to 3600 seconds"},
	} {
		if _, err := jws.ClientAssertion(k, jose.ES256, c.a); !errors.Is(err, jws.ErrRequest) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.a, err, c.want)
		}
	}
}

// FuzzVerify: no input makes Verify panic, and what it accepts is a JWS
// whose header is a JSON object with an allowed alg.
func FuzzVerify(f *testing.F) {
	priv, _ := rsa.GenerateKey(rand.Reader, 1024)
	signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: priv}, nil)
	obj, _ := signer.Sign([]byte("body"))
	compact, _ := obj.CompactSerialize()
	detached, _ := obj.DetachedCompactSerialize()
	for _, seed := range []string{compact, detached, "..", "a.b.c", "eyJhbGciOiJub25lIn0..", "eyJhbGciOiJQUzI1NiIsImI2NCI6ZmFsc2UsImNyaXQiOlsiYjY0Il19..AA"} {
		f.Add(seed, []byte("body"))
	}
	f.Fuzz(func(t *testing.T, s string, payload []byte) {
		v, err := jws.Verify(jws.VerifyRequest{JWS: s, Payload: payload, JWKS: &jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &priv.PublicKey}}}, Now: time.Now()})
		if err != nil {
			if !errors.Is(err, jws.ErrMalformed) && !errors.Is(err, jws.ErrInvalid) {
				t.Fatalf("error of no kind: %v", err)
			}
			return
		}
		var h map[string]any
		if json.Unmarshal(v.Protected, &h) != nil || h["alg"] != "RS256" {
			t.Fatalf("accepted header %s", v.Protected)
		}
	})
}
