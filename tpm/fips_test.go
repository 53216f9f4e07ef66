package tpm_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/brokerd/brokerd/tpm"
)

// fipsChip plays a TPM in FIPS 140-2 mode on swtpm: TPM_PT_MODES has the
// FIPS_140_2 bit, and raw RSA (TPM2_RSA_Decrypt with scheme NULL) is
// refused with TPM_RC_SCHEME. This is how the fallback is forced in tests:
// the device reads the mode at Open, as it does from a real chip, so no
// switch exists outside the chip.
func fipsChip(cmd []byte) []byte {
	switch ccOf(cmd) {
	case tpm2.TPMCCGetCapability:
		if c, p := getCapability(cmd); c == tpm2.TPMCapTPMProperties && p == uint32(tpm2.TPMPTModes) {
			return propertyResponse(tpm2.TPMPTModes, 1)
		}
	case tpm2.TPMCCRSADecrypt:
		return errorResponse(uint32(tpm2.TPMRCScheme) + rcParameter2)
	}
	return nil
}

// TestFIPSModeSignsWithTPM2Sign: on a FIPS-mode chip, RSA keys (created
// and imported) sign RS and PS with SHA-256 and SHA-512 through TPM2_Sign,
// never raw RSA, and PS comes out with salt = hash length (Go's VerifyPSS
// with that salt length, and openssl, accept it).
func TestFIPSModeSignsWithTPM2Sign(t *testing.T) {
	t.Parallel()
	b := startBus(t, fipsChip)
	d := b.open(t, tpm.Config{})
	ctx := context.Background()
	if !d.FIPS() {
		t.Fatal("FIPS() = false on a chip whose TPM_PT_MODES says FIPS 140-2")
	}
	created, err := d.CreateKey(ctx, tpm.RSA2048)
	if err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	priv, _ := rsa.GenerateKey(rand.Reader, 3072)
	imported, err := d.ImportKey(ctx, priv)
	if err != nil {
		t.Fatalf("ImportKey: %v", err)
	}
	msg := []byte("fips")
	for _, k := range []*tpm.Key{created, imported} {
		s, _ := d.Signer(k)
		pub := s.Public().(*rsa.PublicKey)
		for _, h := range []crypto.Hash{crypto.SHA256, crypto.SHA512} {
			digest := sha(h, msg)
			sig, err := s.Sign(nil, digest, h)
			if err != nil {
				t.Fatalf("RS with %v: %v", h, err)
			}
			if err := rsa.VerifyPKCS1v15(pub, h, digest, sig); err != nil {
				t.Fatalf("RS with %v: %v", h, err)
			}
			sig, err = s.Sign(nil, digest, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: h})
			if err != nil {
				t.Fatalf("PS with %v: %v", h, err)
			}
			if err := rsa.VerifyPSS(pub, h, digest, sig, &rsa.PSSOptions{SaltLength: h.Size()}); err != nil {
				t.Fatalf("PS with %v, salt = hash length: %v", h, err)
			}
			opensslVerify(t, pub, h, msg, sig, "rsa_padding_mode:pss", "rsa_pss_saltlen:"+map[crypto.Hash]string{crypto.SHA256: "32", crypto.SHA512: "64"}[h])
		}
		// A salt the chip does not make is refused before the chip is asked.
		if _, err := s.Sign(nil, sha(crypto.SHA256, msg), &rsa.PSSOptions{SaltLength: 20, Hash: crypto.SHA256}); err == nil || !strings.Contains(err.Error(), "FIPS") {
			t.Fatalf("PSS with salt 20 on a FIPS chip: %v", err)
		}
	}
	if n := b.p.Count(uint32(tpm2.TPMCCRSADecrypt)); n != 0 {
		t.Fatalf("%d TPM2_RSA_Decrypt commands on a FIPS chip, want none", n)
	}
	schemes := map[tpm2.TPMAlgID]bool{}
	for _, cmd := range b.commandsWith(tpm2.TPMCCSign) {
		s, _ := signScheme(cmd)
		schemes[s] = true
	}
	if !schemes[tpm2.TPMAlgRSASSA] || !schemes[tpm2.TPMAlgRSAPSS] {
		t.Fatalf("TPM2_Sign schemes on the bus: %v, want RSASSA and RSAPSS", schemes)
	}
}

// TestNotFIPSModeSignsRawRSA: swtpm as it is (TPM_PT_MODES without the
// FIPS bit) signs RSA through raw RSA, with brokerd's own padding.
func TestNotFIPSModeSignsRawRSA(t *testing.T) {
	t.Parallel()
	b := startBus(t, nil)
	d := b.open(t, tpm.Config{})
	if d.FIPS() {
		t.Fatal("swtpm reported in FIPS mode")
	}
	k, err := d.CreateKey(context.Background(), tpm.RSA2048)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := d.Signer(k)
	mustSign(t, s)
	if b.p.Count(uint32(tpm2.TPMCCRSADecrypt)) == 0 {
		t.Fatal("no TPM2_RSA_Decrypt: RSA did not sign raw")
	}
}
