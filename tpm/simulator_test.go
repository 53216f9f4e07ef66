//go:build simulator

package tpm_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"testing"

	"github.com/brokerd/brokerd/tpm"
)

// TestSimulatorKeepsKeysAcrossRuns: with a fixed seed, a key made in one
// simulator run loads and signs in the next (what the demo relies on).
func TestSimulatorKeepsKeysAcrossRuns(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg := tpm.Config{Address: "simulator", SimulatorSeed: 42}
	d, err := tpm.Open(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	k, err := d.CreateKey(ctx, tpm.RSA2048)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()

	d, err = tpm.Open(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	s, _ := d.Signer(k)
	mustSign(t, s)
}

// TestSimulatorSessionsAndPolicies runs the salted signing session, the
// ECDSA digest of the curve's size, the self-tests, PCR reads in rounds
// and an EK-wrapped import on the TCG reference implementation, a second
// TPM besides libtpms (swtpm).
func TestSimulatorSessionsAndPolicies(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d, err := tpm.Open(tpm.Config{Address: "simulator"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, alg := range []tpm.Algorithm{tpm.RSA2048, tpm.P256, tpm.P384} {
		k, err := d.CreateKey(ctx, alg)
		if err != nil {
			t.Fatalf("CreateKey(%s): %v", alg, err)
		}
		s, _ := d.Signer(k)
		signAll(t, s, 1)
	}
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ek, err := d.EndorsementKey(ctx, tpm.ParentECCEK)
	if err != nil {
		t.Fatal(err)
	}
	w, err := tpm.WrapKey(ek, priv)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.ImportWrapped(ctx, w); err != nil {
		t.Fatalf("ImportWrapped: %v", err)
	}
	secret := []byte("0123456789abcdef")
	blob, err := d.Seal(ctx, secret, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 16})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := d.Unseal(ctx, blob); err != nil || string(got) != string(secret) {
		t.Fatalf("Unseal = %q, %v", got, err)
	}
}
