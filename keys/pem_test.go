package keys_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"strings"
	"testing"

	"github.com/youmark/pkcs8"

	"github.com/brokerd/brokerd/keys"
	"github.com/brokerd/brokerd/tpm"
)

// TestParseDER: a key without PEM is read as openssl writes it with
// -outform DER, encrypted PKCS #8 included.
func TestParseDER(t *testing.T) {
	t.Parallel()
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	p8, _ := x509.MarshalPKCS8PrivateKey(ec)
	sec1, _ := x509.MarshalECPrivateKey(ec)
	enc, _ := pkcs8.MarshalPrivateKey(ec, []byte("pw"), nil)
	pw := func() ([]byte, error) { return []byte("pw"), nil }
	for name, c := range map[string]struct {
		der  []byte
		want any
	}{"PKCS #8": {p8, ec}, "SEC 1": {sec1, ec}, "PKCS #1": {x509.MarshalPKCS1PrivateKey(rk), rk}, "encrypted PKCS #8": {enc, ec}} {
		got, err := keys.ParsePrivateKeyPEM(c.der, pw)
		if err != nil || !got.(interface{ Equal(crypto.PrivateKey) bool }).Equal(c.want) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := keys.ParsePrivateKeyPEM(enc, nil); !errors.Is(err, keys.ErrPassword) {
		t.Errorf("encrypted DER without a password: %v", err)
	}
}

// TestParseRefusals: keys brokerd cannot hold are named; files that hold
// no key say what they hold.
func TestParseRefusals(t *testing.T) {
	t.Parallel()
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	edDER, _ := x509.MarshalPKCS8PrivateKey(ed)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	p224DER, _ := x509.MarshalECPrivateKey(p224)
	// secp256k1 in SEC 1 and PKCS #8, as openssl writes them: x509 does not
	// know the curve.
	k1SEC1 := []byte{0x30, 0x2e, 0x02, 0x01, 0x01, 0x04, 0x20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32,
		0xa0, 0x07, 0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a}
	for name, c := range map[string]struct {
		data []byte
		typ  string
	}{
		"Ed25519 PEM":     {pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: edDER}), "Ed25519"},
		"Ed25519 DER":     {edDER, "Ed25519"},
		"P-224":           {pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: p224DER}), "EC P-224"},
		"secp256k1 SEC 1": {pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: k1SEC1}), "EC secp256k1"},
		"secp256k1 DER":   {k1SEC1, "EC secp256k1"},
	} {
		_, err := keys.ParsePrivateKeyPEM(c.data, nil)
		var ue *tpm.UnsupportedKeyError
		if !errors.As(err, &ue) || ue.Type != c.typ {
			t.Errorf("%s: %v, want an unsupported %s", name, err, c.typ)
		}
	}
	for name, c := range map[string]struct {
		data []byte
		want string
	}{
		"certificate": {[]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), "no PEM private key found (the PEM holds CERTIFICATE)"},
		"text":        {[]byte("hello"), "no private key found: neither PEM nor DER"},
		"empty":       {nil, "no private key found"},
	} {
		if _, err := keys.ParsePrivateKeyPEM(c.data, nil); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
}
