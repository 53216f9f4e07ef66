package keys_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"os"
	"strings"
	"testing"

	"github.com/brokerd/brokerd/internal/keyscan"
	"github.com/brokerd/brokerd/keys"
)

// TestNoKeyMaterialInTheState: after importing keys of every storage kind
// the TPM offers (wrapped P-256 and RSA-2048, sealed RSA-4096), nothing
// in the state directory holds their private parts in any encoding, in
// the raw file or in any decoded value.
func TestNoKeyMaterialInTheState(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	r, _ := rsa.GenerateKey(rand.Reader, 2048)
	pemData, err := os.ReadFile("../testdata/reference/example.key")
	if err != nil {
		t.Fatal(err)
	}
	big, err := keys.ParsePrivateKeyPEM(pemData, nil)
	if err != nil {
		t.Fatal(err)
	}
	for id, k := range map[string]crypto.Signer{"ec.key": ec, "rsa.key": r, "big.key": big} {
		if _, err := e.m.Import(ctx, id, k, keys.ImportOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	e.st.Close() // flushed; the scan opens the file itself
	for name, k := range map[string]crypto.Signer{"P-256": ec, "RSA-2048": r, "RSA-4096": big} {
		if found := keyscan.ScanDir(e.dir, keyscan.Needles(k)); len(found) > 0 {
			t.Errorf("the %s key is in the state:\n%s", name, strings.Join(found, "\n"))
		}
	}
}

// TestSealedPSSSaltIsHashLength: a sealed key (signing in Go) uses a PSS
// salt as long as the hash, as TLS 1.3, JWS PS256 and the reference
// broker's verifiers demand; the largest salt does not verify.
func TestSealedPSSSaltIsHashLength(t *testing.T) {
	t.Parallel()
	e := setup(t)
	pemData, err := os.ReadFile("../testdata/reference/example.key")
	if err != nil {
		t.Fatal(err)
	}
	priv, err := keys.ParsePrivateKeyPEM(pemData, nil)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := e.m.Import(ctx, "big.key", priv, keys.ImportOptions{}); err != nil || info.Kind != keys.KindSealed {
		t.Fatalf("import: %+v %v", info, err)
	}
	pub := priv.Public().(*rsa.PublicKey)
	for _, h := range []crypto.Hash{crypto.SHA256, crypto.SHA512} {
		data := []byte("salt check")
		sig, _, err := e.m.Sign(ctx, "big.key", data, keys.PS, h)
		if err != nil {
			t.Fatal(err)
		}
		var digest []byte
		if h == crypto.SHA256 {
			d := sha256.Sum256(data)
			digest = d[:]
		} else {
			d := sha512.Sum512(data)
			digest = d[:]
		}
		if err := rsa.VerifyPSS(pub, h, digest, sig, &rsa.PSSOptions{SaltLength: h.Size()}); err != nil {
			t.Errorf("%v: salt is not the hash length: %v", h, err)
		}
		maxSalt := pub.Size() - h.Size() - 2
		if err := rsa.VerifyPSS(pub, h, digest, sig, &rsa.PSSOptions{SaltLength: maxSalt}); err == nil {
			t.Errorf("%v: verifies with the largest salt", h)
		}
	}
}
