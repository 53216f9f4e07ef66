package broker_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/brokerd/brokerd/broker"
	"github.com/brokerd/brokerd/internal/mockbank"
	"github.com/brokerd/brokerd/internal/testpki"
	"github.com/brokerd/brokerd/keys"
	"github.com/brokerd/brokerd/policy"
	"github.com/brokerd/brokerd/tpm"
)

// helperStack is brokerd with the mock bank and, besides the stack's keys,
// QSealCs for the signing helpers: seal.key (RSA-2048, imported into the
// TPM), seal-ec.key (P-256, made in the TPM), old.key (RSA, its
// certificate expired). Client "tpp" may use every key for the helpers
// and makeRequest to the bank; "bench" may only sign.
func helperStack(t *testing.T) (*stack, *http.Client) {
	t.Helper()
	b := mockbank.Start(t, mockbank.Options{})
	s, _ := bankStack(t, stackOptions{bank: b, rules: []policy.Rule{{Name: "tpp", CN: "tpp", Keys: []string{"*"},
		Ops: []string{"jws", "httpsig", "clientAssertion", "makeRequest"}, Origins: []string{b.URL}, AllowPrivate: true}}})
	ctx := context.Background()
	subject := pkix.Name{Country: []string{"GB"}, Organization: []string{"Surgicon Limited"}, CommonName: "0015800001041RHAAY",
		ExtraNames: []pkix.AttributeTypeAndValue{{Type: asn1.ObjectIdentifier{2, 5, 4, 97}, Value: "PSDGB-OB-Unknown0015800001041RHAAY"}}}
	qseal := testpki.QSealStatements(t, testpki.PSD2Roles(t, "PSP_PI", "PSP_AI"), "Financial Conduct Authority", "GB-FCA")
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for id, leaf := range map[string]testpki.Leaf{
		"seal.key": {Subject: subject, ExtUsage: []x509.ExtKeyUsage{}, Extra: []pkix.Extension{qseal}},
		"old.key": {Subject: subject, ExtUsage: []x509.ExtKeyUsage{}, Extra: []pkix.Extension{qseal},
			NotBefore: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)},
	} {
		cert := b.QTSP.Issue(t, priv.Public(), leaf)
		alias := strings.TrimSuffix(id, ".key") + ".crt"
		if _, err := s.keys.Import(ctx, id, priv, keys.ImportOptions{Chain: []*x509.Certificate{cert, b.QTSP.Cert}, Aliases: []string{alias}}); err != nil {
			t.Fatal(err)
		}
	}
	info, _, err := s.keys.Create(ctx, "seal-ec.key", tpm.P256, keys.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	signer, err := s.keys.Signer(ctx, info.ID)
	if err != nil {
		t.Fatal(err)
	}
	cert := b.QTSP.Issue(t, signer.Public(), testpki.Leaf{Subject: pkix.Name{CommonName: "seal-ec"}, ExtUsage: []x509.ExtKeyUsage{}, Extra: []pkix.Extension{qseal}})
	if _, err := s.keys.AttachCert(info.ID, []*x509.Certificate{cert, b.QTSP.Cert}, nil); err != nil {
		t.Fatal(err)
	}
	return s, s.clientFor(t, "tpp")
}

// leafOf is the leaf certificate of key id.
func leafOf(t *testing.T, s *stack, id string) *x509.Certificate {
	t.Helper()
	chain, err := s.keys.Chain(id)
	if err != nil || len(chain) == 0 {
		t.Fatalf("chain of %s: %v", id, err)
	}
	return chain[0]
}

type jwsResult struct {
	Result struct {
		JWS       string          `json:"jws"`
		Protected json.RawMessage `json:"protected"`
	} `json:"result"`
}

// TestJWSProfiles: POST /jws with TPM keys, RSA and EC, in each profile:
// the header is exactly what the profile lists, and an independent
// implementation verifies the signature (openssl with a 32-byte PSS salt
// for the Open Banking profiles, go-jose for the others). Each call is on
// record.
func TestJWSProfiles(t *testing.T) {
	t.Parallel()
	s, c := helperStack(t)
	if _, err := s.keys.SetJOSE("seal.key", keys.JOSEChange{KID: ptr("90210ABAD"), OBTAN: ptr("openbanking.org.uk")}); err != nil {
		t.Fatal(err)
	}
	seal, sealEC := leafOf(t, s, "seal.key"), leafOf(t, s, "seal-ec.key")
	x5t := func(c *x509.Certificate) string { return keys.X5tS256(c) }
	payload := `{"Data":{"Amount":"1.00"}}`
	obCrit := `"crit":["http://openbanking.org.uk/iat","http://openbanking.org.uk/iss","http://openbanking.org.uk/tan"]`
	cases := []struct {
		name, params string
		want         string // the header, %d for iat
		check        func(t *testing.T, jwsOut string)
	}{
		{"ob-3.1.4, iss from header", `"key_id":"seal.key","profile":"ob-3.1.4","header":{"http://openbanking.org.uk/iss":"0015800001041RHAAY/HQuZPIt3ipkh33Uxytox1E"}`,
			`{"alg":"PS256",` + obCrit + `,"http://openbanking.org.uk/iat":%d,"http://openbanking.org.uk/iss":"0015800001041RHAAY/HQuZPIt3ipkh33Uxytox1E","http://openbanking.org.uk/tan":"openbanking.org.uk","kid":"90210ABAD"}`,
			func(t *testing.T, out string) { opensslPSS(t, seal, out, payload, true) }},
		{"ob-3.1.3, iss from the certificate", `"key_id":"seal.key","profile":"ob-3.1.3","crypto_algorithm":"PS","hash_algorithm":"SHA256"`,
			`{"alg":"PS256","b64":false,"crit":["b64","http://openbanking.org.uk/iat","http://openbanking.org.uk/iss","http://openbanking.org.uk/tan"],"http://openbanking.org.uk/iat":%d,"http://openbanking.org.uk/iss":"C = GB, O = Surgicon Limited, CN = 0015800001041RHAAY, organizationIdentifier = PSDGB-OB-Unknown0015800001041RHAAY","http://openbanking.org.uk/tan":"openbanking.org.uk","kid":"90210ABAD"}`,
			func(t *testing.T, out string) { opensslPSS(t, seal, out, payload, false) }},
		{"compact, EC", `"key_id":"seal-ec.key"`,
			`{"alg":"ES256","kid":"` + x5t(sealEC) + `","x5t#S256":"` + x5t(sealEC) + `"}`,
			func(t *testing.T, out string) { goJoseVerify(t, sealEC, out, "", jose.ES256, payload) }},
		{"detached, EC, x5c", `"key_id":"seal-ec.key","profile":"detached","x5c":true,"header":{"typ":"JOSE","cty":"json"}`,
			`{"alg":"ES256","cty":"json","kid":"` + x5t(sealEC) + `","typ":"JOSE","x5c":["` + b64(sealEC) + `","` + b64(s.bank.QTSP.Cert) + `"],"x5t#S256":"` + x5t(sealEC) + `"}`,
			func(t *testing.T, out string) { goJoseVerify(t, sealEC, out, payload, jose.ES256, payload) }},
		{"compact, RSA RS512", `"key_id":"seal.key","crypto_algorithm":"RS","hash_algorithm":"SHA512"`,
			`{"alg":"RS512","kid":"90210ABAD","x5t#S256":"` + x5t(seal) + `"}`,
			func(t *testing.T, out string) { goJoseVerify(t, seal, out, "", jose.RS512, payload) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			seq, _ := s.log.Head()
			before := time.Now().Unix()
			status, body := post(t, c, s.url+"/jws", `{"params":{"payload":`+quote(payload)+`,`+tc.params+`}}`)
			after := time.Now().Unix()
			var res jwsResult
			if status != 200 || json.Unmarshal([]byte(body), &res) != nil {
				t.Fatalf("%d %s", status, body)
			}
			var got map[string]any
			json.Unmarshal(res.Result.Protected, &got)
			iat, _ := got["http://openbanking.org.uk/iat"].(float64)
			want := tc.want
			if strings.Contains(want, "%d") {
				if int64(iat) < before || int64(iat) > after {
					t.Errorf("iat %v not within [%d, %d]", iat, before, after)
				}
				want = fmt.Sprintf(want, int64(iat))
			}
			if string(res.Result.Protected) != want {
				t.Errorf("protected\n%s\nwant\n%s", res.Result.Protected, want)
			}
			if h, _ := base64.RawURLEncoding.DecodeString(strings.Split(res.Result.JWS, ".")[0]); string(h) != want {
				t.Errorf("the JWS's header %s is not the protected one returned", h)
			}
			tc.check(t, res.Result.JWS)
			recs := records(t, s, seq)
			if len(recs) != 1 || recs[0].Op != "jws" || recs[0].Status != 200 || recs[0].DataSHA256 != sha(payload) || recs[0].Alg != got["alg"] ||
				!strings.HasPrefix(recs[0].Detail, "profile ") || recs[0].Client != "CN=tpp" {
				t.Errorf("records %+v", recs)
			}
		})
	}
}

func ptr(s string) *string { return &s }

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func b64(c *x509.Certificate) string { return base64.StdEncoding.EncodeToString(c.Raw) }

// opensslPSS has openssl verify a detached Open Banking JWS: PS256, salt
// 32, over header.BASE64URL(payload) (b64) or header.payload (RFC 7797).
func opensslPSS(t *testing.T, cert *x509.Certificate, out, payload string, b64 bool) {
	t.Helper()
	parts := strings.Split(out, ".")
	if len(parts) != 3 || parts[1] != "" {
		t.Fatalf("not detached: %s", out)
	}
	input := parts[0] + "." + payload
	if b64 {
		input = parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(payload))
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, data := range map[string][]byte{"cert.pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), "in": []byte(input), "sig": sig} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	sh := "openssl x509 -in cert.pem -pubkey -noout > pub.pem && openssl dgst -sha256 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32 -verify pub.pem -signature sig in"
	cmd := exec.Command("sh", "-c", sh)
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil || strings.TrimSpace(string(b)) != "Verified OK" {
		t.Errorf("openssl: %s %v", b, err)
	}
}

// goJoseVerify has go-jose verify a compact or (payload given) detached
// JWS with the certificate's key.
func goJoseVerify(t *testing.T, cert *x509.Certificate, out, detached string, alg jose.SignatureAlgorithm, payload string) {
	t.Helper()
	var obj *jose.JSONWebSignature
	var err error
	if detached != "" {
		obj, err = jose.ParseDetached(out, []byte(detached), []jose.SignatureAlgorithm{alg})
	} else {
		obj, err = jose.ParseSignedCompact(out, []jose.SignatureAlgorithm{alg})
	}
	if err != nil {
		t.Fatal(err)
	}
	if got, err := obj.Verify(cert.PublicKey); err != nil || string(got) != payload {
		t.Errorf("go-jose: %q %v", got, err)
	}
}

// TestJWSVerifyEndpoint: what /jws signs, /jws/verify accepts with the
// certificate and with a JWKS; another payload is invalid, with the
// reason; a request without a key is refused.
func TestJWSVerifyEndpoint(t *testing.T) {
	t.Parallel()
	s, c := helperStack(t)
	_, body := post(t, c, s.url+"/jws", `{"params":{"key_id":"seal.key","payload":"{}","profile":"ob-3.1.4","header":{"http://openbanking.org.uk/tan":"t"}}}`)
	var res jwsResult
	if err := json.Unmarshal([]byte(body), &res); err != nil {
		t.Fatal(body)
	}
	leaf := leafOf(t, s, "seal.key")
	certPEM := quote(string(testpki.CertPEM(leaf)))
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: leaf.PublicKey, KeyID: keys.X5tS256(leaf)}}})
	j := quote(res.Result.JWS)
	for _, tc := range []struct {
		name, params string
		status       int
		want         string
	}{
		{"certificate", `"jws":` + j + `,"payload":"{}","certificate":` + certPEM, 200,
			`{"result":{"valid":true,"alg":"PS256","kid":"` + keys.X5tS256(leaf) + `","protected":` + string(res.Result.Protected) + `,"payload":"{}"}}`},
		{"jwks", `"jws":` + j + `,"payload":"{}","jwks":` + string(jwks), 200,
			`{"result":{"valid":true,"alg":"PS256","kid":"` + keys.X5tS256(leaf) + `","protected":` + string(res.Result.Protected) + `,"payload":"{}"}}`},
		{"jwks with keys brokerd cannot use", `"jws":` + j + `,"payload":"{}","jwks":{"keys":[{"kty":"XYZ","kid":"other"},{"kty":"RSA","n":"!!","e":"AQAB"},` + string(jwks[len(`{"keys":[`):]), 200,
			`{"result":{"valid":true,"alg":"PS256","kid":"` + keys.X5tS256(leaf) + `","protected":` + string(res.Result.Protected) + `,"payload":"{}"}}`},
		{"jwks without a usable key", `"jws":` + j + `,"payload":"{}","jwks":{"keys":[{"kty":"XYZ"}]}`, 400,
			`{"code":400,"message":"Bad verification key","data":"jwks holds no public key brokerd can verify with (RSA or EC)"}`},
		{"jwks without keys", `"jws":` + j + `,"payload":"{}","jwks":{"key":[]}`, 400,
			`{"code":400,"message":"Bad verification key","data":"jwks must be a JSON object with a keys array"}`},
		{"other payload", `"jws":` + j + `,"payload":"{ }","certificate":` + certPEM, 200,
			`{"result":{"valid":false,"reason":"the signature does not verify with the certificate's key"}}`},
		{"no payload", `"jws":` + j + `,"certificate":` + certPEM, 400,
			`{"code":400,"message":"Malformed JWS","data":"the JWS is detached: give the payload it signs"}`},
		{"both keys", `"jws":` + j + `,"payload":"{}","certificate":` + certPEM + `,"jwks":` + string(jwks), 400,
			`{"code":400,"message":"Bad verification key","data":"give exactly one of certificate (PEM) and jwks"}`},
		{"bad PEM", `"jws":` + j + `,"payload":"{}","certificate":"x"`, 400,
			`{"code":400,"message":"Bad verification key","data":"certificate: no PEM certificate found"}`},
		{"jwks not a dict", `"jws":` + j + `,"jwks":[1]`, 422,
			`{"detail":[{"type":"dict_type","loc":["body","params","jwks"],"msg":"Input should be a valid dictionary","input":[1]}]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seq, _ := s.log.Head()
			status, got := post(t, c, s.url+"/jws/verify", `{"params":{`+tc.params+`}}`)
			if status != tc.status || got != tc.want {
				t.Errorf("%d %s\nwant %d %s", status, got, tc.status, tc.want)
			}
			if recs := records(t, s, seq); len(recs) != 1 || recs[0].Op != "jws.verify" || recs[0].Status != tc.status {
				t.Errorf("records %+v", recs)
			}
		})
	}
}

// TestClientAssertionEndpoint: go-jose's JWT parser verifies the
// assertions of an RSA and an EC TPM key, with exactly the RFC 7523
// claims.
func TestClientAssertionEndpoint(t *testing.T) {
	t.Parallel()
	s, c := helperStack(t)
	for _, tc := range []struct {
		key string
		alg jose.SignatureAlgorithm
	}{{"seal.key", jose.PS256}, {"seal-ec.key", jose.ES256}} {
		t.Run(tc.key, func(t *testing.T) {
			seq, _ := s.log.Head()
			before := time.Now().Unix()
			status, body := post(t, c, s.url+"/clientAssertion", `{"params":{"key_id":"`+tc.key+`","client_id":"tpp-1","audience":"https://as.bank/token","lifetime_s":60}}`)
			var res struct{ Result string }
			if status != 200 || json.Unmarshal([]byte(body), &res) != nil {
				t.Fatalf("%d %s", status, body)
			}
			tok, err := jwt.ParseSigned(res.Result, []jose.SignatureAlgorithm{tc.alg})
			if err != nil {
				t.Fatal(err)
			}
			var claims jwt.Claims
			var all map[string]any
			leaf := leafOf(t, s, tc.key)
			if err := tok.Claims(leaf.PublicKey, &claims, &all); err != nil {
				t.Fatalf("go-jose: %v", err)
			}
			err = claims.Validate(jwt.Expected{Issuer: "tpp-1", Subject: "tpp-1", AnyAudience: jwt.Audience{"https://as.bank/token"}})
			if err != nil || len(all) != 6 || len(claims.ID) != 32 || claims.IssuedAt.Time().Unix() < before || claims.Expiry.Time().Unix() != claims.IssuedAt.Time().Unix()+60 {
				t.Errorf("claims %v: %v", all, err)
			}
			if h := tok.Headers[0]; h.KeyID != keys.X5tS256(leaf) || h.ExtraHeaders["typ"] != "JWT" || h.ExtraHeaders["x5t#S256"] != keys.X5tS256(leaf) {
				t.Errorf("header %+v", h)
			}
			recs := records(t, s, seq)
			if len(recs) != 1 || recs[0].Op != "clientAssertion" || recs[0].KeyID != tc.key || recs[0].Alg != string(tc.alg) ||
				recs[0].Detail != "client_id tpp-1 audience https://as.bank/token" {
				t.Errorf("records %+v", recs)
			}
		})
	}
}

// TestHelperRefusals: every way a helper call is refused, with its exact
// answer and its record.
func TestHelperRefusals(t *testing.T) {
	t.Parallel()
	s, tpp := helperStack(t)
	bench := s.client
	for _, tc := range []struct {
		name, path, params string
		c                  *http.Client
		status             int
		want, key          string
	}{
		{"malformed", "/jws", `"payload":"x","profile":"ob-4"`, tpp, 422,
			`{"detail":[{"type":"missing","loc":["body","params","key_id"],"msg":"Field required","input":{"payload":"x","profile":"ob-4"}},{"type":"enum","loc":["body","params","profile"],"msg":"Input should be 'compact', 'detached', 'ob-3.1.3' or 'ob-3.1.4'","input":"ob-4","ctx":{"expected":"'compact', 'detached', 'ob-3.1.3' or 'ob-3.1.4'"}}]}`, ""},
		{"header not a dict", "/jws", `"key_id":"seal.key","payload":"x","header":"kid"`, tpp, 422,
			`{"detail":[{"type":"dict_type","loc":["body","params","header"],"msg":"Input should be a valid dictionary","input":"kid"}]}`, ""},
		{"unknown key", "/jws", `"key_id":"nope","payload":"x"`, tpp, 404,
			`{"code":404,"message":"Unknown key","data":"no key named \"nope\""}`, "nope"},
		{"wrong algorithm", "/jws", `"key_id":"seal.key","payload":"x","crypto_algorithm":"ES"`, tpp, 400,
			`{"code":400,"message":"Cannot sign as asked","data":"algorithm ES is incompatible with an RSA key"}`, "seal.key"},
		{"Open Banking with EC", "/jws", `"key_id":"seal-ec.key","payload":"x","profile":"ob-3.1.4"`, tpp, 400,
			`{"code":400,"message":"Cannot sign as asked","data":"profile ob-3.1.4 signs with PS256 only (RSA-PSS, SHA-256), not ES256"}`, "seal-ec.key"},
		{"Open Banking without tan", "/jws", `"key_id":"seal.key","payload":"x","profile":"ob-3.1.3"`, tpp, 400,
			`{"code":400,"message":"Cannot sign as asked","data":"no http://openbanking.org.uk/tan: give it in header or configure the key (brokerd key config --ob-tan)"}`, "seal.key"},
		{"QWAC", "/jws", `"key_id":"qwac.key","payload":"x"`, tpp, 403,
			`{"code":403,"message":"Key not for signing","data":"key \"qwac.key\" is a QWAC (purpose qwac): it authenticates brokerd to banks in makeRequest and signs nothing; use a QSealC"}`, "qwac.key"},
		{"QWAC, assertion", "/clientAssertion", `"key_id":"qwac.crt","client_id":"c","audience":"a"`, tpp, 403,
			`{"code":403,"message":"Key not for signing","data":"key \"qwac.key\" is a QWAC (purpose qwac): it authenticates brokerd to banks in makeRequest and signs nothing; use a QSealC"}`, "qwac.key"},
		{"policy", "/jws", `"key_id":"seal.key","payload":"x"`, bench, 403,
			`{"code":403,"message":"Forbidden","data":"client CN=bench may not use key \"seal.key\" for jws"}`, "seal.key"},
		{"policy, assertion", "/clientAssertion", `"key_id":"seal.key","client_id":"c","audience":"a"`, bench, 403,
			`{"code":403,"message":"Forbidden","data":"client CN=bench may not use key \"seal.key\" for clientAssertion"}`, "seal.key"},
		{"policy, verify", "/jws/verify", `"jws":"a..b"`, bench, 403,
			`{"code":403,"message":"Forbidden","data":"client CN=bench may not use jws"}`, ""},
		{"expired", "/jws", `"key_id":"old.key","payload":"x"`, tpp, 403,
			`{"code":403,"message":"Certificate expired","data":"the certificate of key \"old.key\" expired on 2025-01-01T00:00:00Z: attach a renewed one (brokerd key cert)"}`, "old.key"},
		{"expired, assertion", "/clientAssertion", `"key_id":"old.key","client_id":"c","audience":"a"`, tpp, 403,
			`{"code":403,"message":"Certificate expired","data":"the certificate of key \"old.key\" expired on 2025-01-01T00:00:00Z: attach a renewed one (brokerd key cert)"}`, "old.key"},
		{"lifetime too long", "/clientAssertion", `"key_id":"seal.key","client_id":"c","audience":"a","lifetime_s":7200`, tpp, 400,
			`{"code":400,"message":"Cannot sign as asked","data":"lifetime_s must be 1 to 3600 seconds"}`, "seal.key"},
		{"lifetime zero", "/clientAssertion", `"key_id":"seal.key","client_id":"c","audience":"a","lifetime_s":0`, tpp, 400,
			`{"code":400,"message":"Cannot sign as asked","data":"lifetime_s must be 1 to 3600 seconds"}`, "seal.key"},
		{"lifetime not a number", "/clientAssertion", `"key_id":"seal.key","client_id":"c","audience":"a","lifetime_s":"soon"`, tpp, 422,
			`{"detail":[{"type":"int_parsing","loc":["body","params","lifetime_s"],"msg":"Input should be a valid integer, unable to parse string as an integer","input":"soon"}]}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seq, _ := s.log.Head()
			status, got := post(t, tc.c, s.url+tc.path, `{"params":{`+tc.params+`}}`)
			if status != tc.status || got != tc.want {
				t.Errorf("%d %s\nwant %d %s", status, got, tc.status, tc.want)
			}
			recs := records(t, s, seq)
			if len(recs) != 1 || recs[0].Status != tc.status || recs[0].KeyID != tc.key || recs[0].Error == "" {
				t.Errorf("records %+v", recs)
			}
		})
	}
}

// TestKeysShowCertificateFacts: GET /keys tells a client what each key's
// certificate says: subject, issuer, organizationIdentifier, QcType, the
// PSD2 roles and authority, validity, x5t#S256 and SHA-1 fingerprint.
func TestKeysShowCertificateFacts(t *testing.T) {
	t.Parallel()
	s, c := helperStack(t)
	leaf := leafOf(t, s, "seal.key")
	status, body := get(t, c, s.url+"/keys")
	var res struct {
		Result []map[string]any `json:"result"`
	}
	if status != 200 || json.Unmarshal([]byte(body), &res) != nil {
		t.Fatalf("%d %s", status, body)
	}
	var seal map[string]any
	for _, k := range res.Result {
		if k["id"] == "seal.key" {
			seal = k
		}
	}
	sum := sha1.Sum(leaf.Raw)
	want := map[string]any{"id": "seal.key", "aliases": []any{"seal.crt"}, "kind": "imported", "algorithm": "rsa2048", "purpose": "qseal",
		"subject":                 "organizationIdentifier=PSDGB-OB-Unknown0015800001041RHAAY,CN=0015800001041RHAAY,O=Surgicon Limited,C=GB",
		"issuer":                  "CN=Test QTSP,O=brokerd tests",
		"organization_identifier": "PSDGB-OB-Unknown0015800001041RHAAY", "qc_types": []any{"eseal"},
		"psd2":       map[string]any{"roles": []any{"PSP_PI", "PSP_AI"}, "nca_name": "Financial Conduct Authority", "nca_id": "GB-FCA"},
		"not_before": leaf.NotBefore.UTC().Format(time.RFC3339), "not_after": leaf.NotAfter.UTC().Format(time.RFC3339),
		"x5t#S256": keys.X5tS256(leaf), "sha1_fingerprint": hex.EncodeToString(sum[:]),
		"certificate_chain": []any{string(testpki.CertPEM(leaf)), string(testpki.CertPEM(s.bank.QTSP.Cert))}}
	if !reflect.DeepEqual(seal, want) {
		got, _ := json.MarshalIndent(seal, "", " ")
		exp, _ := json.MarshalIndent(want, "", " ")
		t.Errorf("seal.key\n%s\nwant\n%s", got, exp)
	}
}

// get fetches url and returns the status and body.
func get(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestHelpersRefusedWhenTheTPMIsBusy: with the TPM's queue full, the
// signing helpers are refused at once, like /sign, on record; verifying
// needs no TPM and goes on.
func TestHelpersRefusedWhenTheTPMIsBusy(t *testing.T) {
	t.Parallel()
	s, c := helperStack(t)
	busy := s.serve(broker.Config{Audit: s.log, TPMBusy: func() bool { return true }})
	const refusal = `{"code":503,"message":"TPM busy","data":"too many operations are waiting for the TPM; retry later"}`
	for _, tc := range []struct{ path, op, params string }{
		{"/sign", "sign", `"key_id":"seal.key","data":"x"`},
		{"/jws", "jws", `"key_id":"seal.key","payload":"x"`},
		{"/clientAssertion", "clientAssertion", `"key_id":"seal.key","client_id":"c","audience":"a"`},
		{"/httpsig", "httpsig", `"key_id":"seal.key","method":"GET","path":"/"`},
	} {
		seq, _ := s.log.Head()
		if status, body := post(t, c, busy+tc.path, `{"params":{`+tc.params+`}}`); status != 503 || body != refusal {
			t.Errorf("%s: %d %s", tc.path, status, body)
		}
		if recs := records(t, s, seq); len(recs) != 1 || recs[0].Op != tc.op || recs[0].Status != 503 {
			t.Errorf("%s: records %+v", tc.path, recs)
		}
	}
	if status, body := post(t, c, busy+"/jws/verify", `{"params":{"jws":"a..b","payload":"x","certificate":"x"}}`); status != 400 {
		t.Errorf("/jws/verify: %d %s", status, body)
	}
}
