package tpm

import (
	"context"
	"errors"
	"math/big"
	"testing"

	"github.com/brokerd/brokerd/internal/swtpmtest"
)

// TestGeneratedKeysAreROCATested: an RSA key the TPM generates, and its RSA
// endorsement key, are refused when they have the ROCA fingerprint (here
// every modulus is said to have it: swtpm does not make such keys).
func TestGeneratedKeysAreROCATested(t *testing.T) {
	ctx := context.Background()
	sw := swtpmtest.Start(t)
	d, err := Open(Config{Address: sw.Address()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var tested []*big.Int
	d.rocaHook = func(n *big.Int) bool { tested = append(tested, n); return true }
	if _, err := d.CreateKey(ctx, RSA2048); !errors.Is(err, ErrROCA) {
		t.Fatalf("CreateKey(rsa2048) with a ROCA TPM: %v, want ErrROCA", err)
	}
	if _, err := d.EndorsementKey(ctx, ParentRSAEK); !errors.Is(err, ErrROCA) {
		t.Fatalf("EndorsementKey(RSA) with a ROCA TPM: %v, want ErrROCA", err)
	}
	if len(tested) != 2 {
		t.Fatalf("%d moduli tested, want 2", len(tested))
	}
	if _, err := d.CreateKey(ctx, P256); err != nil {
		t.Fatalf("an ECC key is no RSA key: %v", err)
	}
	d.rocaHook = nil
	if _, err := d.CreateKey(ctx, RSA2048); err != nil {
		t.Fatalf("CreateKey(rsa2048) with the real test: %v", err)
	}
}
