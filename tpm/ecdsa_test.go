package tpm_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/brokerd/brokerd/tpm"
)

// TestESAnyHashOnSHA256OnlyChip plays an SLB9670 (hashes SHA-1 and SHA-256
// only; TPM2_Sign naming another fails): P-256 signs ES with SHA-1,
// SHA-256, SHA-384 and SHA-512, every TPM2_Sign on the bus names a hash the
// chip has, and each signature verifies as ECDSA over the digest of the
// hash the client asked for, with Go and with openssl.
func TestESAnyHashOnSHA256OnlyChip(t *testing.T) {
	t.Parallel()
	b := startBus(t, slb9670)
	d := b.open(t, tpm.Config{})
	ctx := context.Background()
	if d.HasHash(tpm2.TPMAlgSHA512) || !d.HasHash(tpm2.TPMAlgSHA256) {
		t.Fatal("the played chip's hashes were not read")
	}
	k, err := d.CreateKey(ctx, tpm.P256)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := d.Signer(k)
	msg := []byte("a string to sign")
	for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256, crypto.SHA384, crypto.SHA512} {
		digest := sha(h, msg)
		der, err := s.Sign(nil, digest, h)
		if err != nil {
			t.Fatalf("ES with %v: %v", h, err)
		}
		raw, err := tpm.ECDSARaw(der, 32)
		if err != nil {
			t.Fatal(err)
		}
		r, sv := new(big.Int).SetBytes(raw[:32]), new(big.Int).SetBytes(raw[32:])
		if !ecdsa.Verify(s.Public().(*ecdsa.PublicKey), digest, r, sv) {
			t.Fatalf("ES with %v does not verify over the %v digest", h, h)
		}
		if h == crypto.SHA256 || h == crypto.SHA512 {
			opensslVerify(t, s.Public(), h, msg, der)
		}
	}
	signs := b.commandsWith(tpm2.TPMCCSign)
	if len(signs) < 4 {
		t.Fatalf("%d TPM2_Sign commands on the bus, want at least 4", len(signs))
	}
	for _, cmd := range signs {
		if scheme, h := signScheme(cmd); scheme != tpm2.TPMAlgECDSA || !slices.Contains(slb9670Hashes, h) {
			t.Fatalf("TPM2_Sign names scheme %#x with hash %#x; an SLB9670 has only SHA-1 and SHA-256", scheme, h)
		}
	}
}

// TestESP384 signs with P-384 and every hash; TPM2_Sign names SHA-384 and
// gets 48 bytes (the leftmost of a SHA-512 digest, a shorter digest padded
// in front), and the signatures verify over the requested digests.
func TestESP384(t *testing.T) {
	t.Parallel()
	b := startBus(t, nil)
	d := b.open(t, tpm.Config{})
	k, err := d.CreateKey(context.Background(), tpm.P384)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := d.Signer(k)
	for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256, crypto.SHA384, crypto.SHA512} {
		digest := sha(h, []byte("p384"))
		der, err := s.Sign(nil, digest, h)
		if err != nil {
			t.Fatalf("ES with %v: %v", h, err)
		}
		if !ecdsa.VerifyASN1(s.Public().(*ecdsa.PublicKey), digest, der) {
			t.Fatalf("P-384 ES with %v does not verify", h)
		}
		if h == crypto.SHA512 {
			opensslVerify(t, s.Public(), h, []byte("p384"), der)
		}
	}
	for _, cmd := range b.commandsWith(tpm2.TPMCCSign) {
		if _, h := signScheme(cmd); h != tpm2.TPMAlgSHA384 {
			t.Fatalf("P-384 TPM2_Sign names hash %#x, want SHA-384", h)
		}
	}
}

// opensslVerify checks an ASN.1 ECDSA or PKCS #1 v1.5 signature over msg
// with `openssl dgst -verify`, the reference a client would use.
func opensslVerify(t *testing.T, pub crypto.PublicKey, h crypto.Hash, msg, sig []byte, sigopts ...string) {
	t.Helper()
	dir := t.TempDir()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"pub.pem": pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), "msg": msg, "sig": sig}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	flag := map[crypto.Hash]string{crypto.SHA256: "-sha256", crypto.SHA384: "-sha384", crypto.SHA512: "-sha512"}[h]
	args := []string{"dgst", flag, "-verify", filepath.Join(dir, "pub.pem"), "-signature", filepath.Join(dir, "sig")}
	for _, o := range sigopts {
		args = append(args, "-sigopt", o)
	}
	out, err := exec.Command("openssl", append(args, filepath.Join(dir, "msg"))...).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl dgst %s %v: %v: %s", flag, sigopts, err, out)
	}
}
