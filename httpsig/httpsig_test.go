package httpsig_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/brokerd/brokerd/httpsig"
	"github.com/brokerd/brokerd/internal/testpki"
)

// dtrust is a QSealC with serial 123456 (hex 1E240) issued by a CA named
// as in the NextGenPSD2 example keyId (CN=D-TRUST CA 2-1 2015, O=D-Trust
// GmbH, C=DE).
func dtrust(t *testing.T, priv crypto.Signer) *x509.Certificate {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "D-TRUST CA 2-1 2015", Organization: []string{"D-Trust GmbH"}, Country: []string{"DE"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	leaf := &x509.Certificate{SerialNumber: big.NewInt(123456), Subject: pkix.Name{CommonName: "TPP seal"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	return testpki.Create(t, leaf, ca, priv.Public(), caKey)
}

func softKey(priv *rsa.PrivateKey, cert *x509.Certificate, h crypto.Hash) httpsig.Key {
	return httpsig.Key{Cert: cert, Hash: h, Sign: func(ss []byte) ([]byte, error) {
		d := h.New()
		d.Write(ss)
		return rsa.SignPKCS1v15(rand.Reader, priv, h, d.Sum(nil))
	}}
}

var date = time.Date(1994, 11, 6, 8, 49, 37, 0, time.UTC)

// TestNextGenPSD2Example signs the documented example (an empty body, the
// example X-Request-ID, PSU-ID and TPP-Redirect-URI): the headers added,
// the keyId, the signing string written out by hand, and openssl
// verifies the signature.
func TestNextGenPSD2Example(t *testing.T) {
	priv, _ := rsa.GenerateKey(rand.Reader, 2048)
	cert := dtrust(t, priv)
	res, err := httpsig.Sign(softKey(priv, cert, crypto.SHA256), httpsig.Request{Method: "POST", Target: "/v1/payments/sepa-credit-transfers",
		Headers: [][2]string{{"X-Request-ID", "99391c7e-ad88-49ec-a2ad-99ddcb1f7721"}, {"PSU-ID", "PSU-1234"},
			{"TPP-Redirect-URI", "https://www.tpp.com/cb"}, {"Content-Type", "application/json"}}, Now: date})
	if err != nil {
		t.Fatal(err)
	}
	const want = "digest: SHA-256=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n" +
		"x-request-id: 99391c7e-ad88-49ec-a2ad-99ddcb1f7721\n" +
		"psu-id: PSU-1234\n" +
		"tpp-redirect-uri: https://www.tpp.com/cb\n" +
		"date: Sun, 06 Nov 1994 08:49:37 GMT"
	if res.SigningString != want {
		t.Errorf("signing string\n%s\nwant\n%s", res.SigningString, want)
	}
	if len(res.Headers) != 8 {
		t.Fatalf("headers %q", res.Headers)
	}
	added := res.Headers[4:]
	wantSig := regexp.MustCompile(`^keyId="SN=1E240,CA=CN=D-TRUST%20CA%202-1%202015,O=D-Trust%20GmbH,C=DE",algorithm="rsa-sha256",headers="digest x-request-id psu-id tpp-redirect-uri date",signature="([A-Za-z0-9+/=]+)"$`)
	m := wantSig.FindStringSubmatch(added[2][1])
	if added[0] != [2]string{"Date", "Sun, 06 Nov 1994 08:49:37 GMT"} || added[1] != [2]string{"Digest", "SHA-256=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="} ||
		added[2][0] != "Signature" || m == nil || added[3] != [2]string{"TPP-Signature-Certificate", base64.StdEncoding.EncodeToString(cert.Raw)} {
		t.Fatalf("added headers %q", added)
	}
	raw, _ := base64.StdEncoding.DecodeString(m[1])
	opensslVerify(t, cert, want, raw)
}

// opensslVerify has openssl check an RSASSA-PKCS1-v1_5 SHA-256 signature.
func opensslVerify(t *testing.T, cert *x509.Certificate, signed string, sig []byte) {
	t.Helper()
	dir := t.TempDir()
	for name, data := range map[string][]byte{"cert.pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), "in": []byte(signed), "sig": sig} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("sh", "-c", "openssl x509 -in cert.pem -pubkey -noout > pub.pem && openssl dgst -sha256 -verify pub.pem -signature sig in")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "Verified OK" {
		t.Errorf("openssl: %s %v", out, err)
	}
}

// TestRequestTargetAndSHA512: (request-target) comes first on request,
// a Digest given is kept when it is the body's, an X-Request-ID is
// generated as a UUID, and SHA-512 makes rsa-sha512 and a SHA-512 Digest.
func TestRequestTargetAndSHA512(t *testing.T) {
	priv, _ := rsa.GenerateKey(rand.Reader, 2048)
	cert := dtrust(t, priv)
	body := []byte(`{"a":1}`)
	sum := sha256.Sum256(body)
	given := "SHA-256=" + base64.StdEncoding.EncodeToString(sum[:])
	res, err := httpsig.Sign(softKey(priv, cert, crypto.SHA256), httpsig.Request{Method: "POST", Target: "/p?x=1", Body: body,
		Headers: [][2]string{{"digest", given}}, RequestTarget: true, Now: date})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(res.SigningString, "\n")
	uuid := regexp.MustCompile(`^x-request-id: [0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	if len(lines) != 4 || lines[0] != "(request-target): post /p?x=1" || lines[1] != "digest: "+given || !uuid.MatchString(lines[2]) ||
		lines[3] != "date: Sun, 06 Nov 1994 08:49:37 GMT" || len(res.Headers) != 5 || res.Headers[0] != [2]string{"digest", given} {
		t.Errorf("signing string %q, headers %q", res.SigningString, res.Headers)
	}
	res, err = httpsig.Sign(softKey(priv, cert, crypto.SHA512), httpsig.Request{Method: "GET", Target: "/", Now: date,
		SignedHeaders: []string{"X-Request-ID", "Digest"}, Headers: [][2]string{{"X-Request-ID", "1"}}})
	if err != nil || res.Algorithm != "rsa-sha512" ||
		res.SigningString != "x-request-id: 1\ndigest: SHA-512=z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg==" {
		t.Errorf("SHA-512: %q, %v", res.SigningString, err)
	}
}

// TestRefusals: each request that cannot be signed says why.
func TestRefusals(t *testing.T) {
	priv, _ := rsa.GenerateKey(rand.Reader, 2048)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k := softKey(priv, dtrust(t, priv), crypto.SHA256)
	ecKey := httpsig.Key{Cert: dtrust(t, ec), Hash: crypto.SHA256}
	for _, c := range []struct {
		name string
		k    httpsig.Key
		r    httpsig.Request
		want string
	}{
		{"EC key", ecKey, httpsig.Request{}, "Berlin Group signatures need an RSA QSealC (rsa-sha256 or rsa-sha512); this key is ECDSA"},
		{"no certificate", httpsig.Key{Hash: crypto.SHA256}, httpsig.Request{}, "the key has no certificate"},
		{"twice", k, httpsig.Request{Headers: [][2]string{{"PSU-ID", "a"}, {"psu-id", "b"}}}, "header psu-id is given twice"},
		{"Signature given", k, httpsig.Request{Headers: [][2]string{{"signature", "x"}}}, "header signature is brokerd's to set"},
		{"certificate given", k, httpsig.Request{Headers: [][2]string{{"TPP-Signature-Certificate", "x"}}}, "header TPP-Signature-Certificate is brokerd's to set"},
		{"wrong digest", k, httpsig.Request{Body: []byte("x"), Headers: [][2]string{{"Digest", "SHA-256=AAAA"}}}, `header Digest "SHA-256=AAAA" is not the body's "SHA-256=LXEWQrcmsEQBYnyp+6wy9chTD7GQPMTbAiWHF5IaSIE="`},
		{"missing signed header", k, httpsig.Request{Method: "GET", Target: "/x", SignedHeaders: []string{"digest", "x-request-id", "psu-id"}}, "header psu-id is to be signed but is not in the request"},
		{"CR LF in the path", k, httpsig.Request{Method: "POST", Target: "/v1/x\r\nHost: evil", RequestTarget: true}, `path "/v1/x\r\nHost: evil" holds a space, a control character or a character to percent-encode`},
		{"space in the path", k, httpsig.Request{Method: "POST", Target: "/v1 x"}, `path "/v1 x" holds a space`},
		{"no leading slash", k, httpsig.Request{Method: "POST", Target: "v1/x"}, `path "v1/x" does not start with /`},
		{"method not a token", k, httpsig.Request{Method: "PO ST", Target: "/x"}, `method "PO ST" is not an HTTP token`},
		{"no method", k, httpsig.Request{Target: "/x"}, `method "" is not an HTTP token`},
		{"no digest signed", k, httpsig.Request{SignedHeaders: []string{"x-request-id", "date"}}, "signed_headers must include digest and x-request-id"},
		{"named twice", k, httpsig.Request{SignedHeaders: []string{"digest", "Digest"}}, "signed_headers names digest twice"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := httpsig.Sign(c.k, c.r)
			if !errors.Is(err, httpsig.ErrRequest) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err %v, want %q", err, c.want)
			}
		})
	}
}
