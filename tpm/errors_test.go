package tpm_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/binary"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/brokerd/brokerd/tpm"
)

// TestImportOfAlgorithmTheTPMLacks plays an SLB9670 (RSA-2048 and P-256
// only): importing RSA-3072 or P-384, as a PEM key or a blob wrapped for
// this TPM's EK, and creating them, say "unsupported by this TPM", never
// "another TPM", and nothing reaches TPM2_Import or TPM2_Create.
func TestImportOfAlgorithmTheTPMLacks(t *testing.T) {
	t.Parallel()
	b := startBus(t, slb9670)
	d := b.open(t, tpm.Config{})
	ctx := context.Background()
	rsa3072, _ := rsa.GenerateKey(rand.Reader, 3072)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	ek, err := d.EndorsementKey(ctx, tpm.ParentECCEK)
	if err != nil {
		t.Fatal(err)
	}
	imports, creates := b.p.Count(uint32(tpm2.TPMCCImport)), b.p.Count(uint32(tpm2.TPMCCCreate))
	for name, priv := range map[string]crypto.Signer{"RSA-3072": rsa3072, "P-384": p384} {
		alg, _ := tpm.AlgorithmOf(priv.Public())
		if d.Supports(alg) {
			t.Fatalf("%s: Supports = true on a chip without it", name)
		}
		_, err := d.ImportKey(ctx, priv)
		checkUnsupported(t, name+" ImportKey", err)
		w, err := tpm.WrapKey(ek, priv)
		if err != nil {
			t.Fatal(err)
		}
		_, err = d.ImportWrapped(ctx, w)
		checkUnsupported(t, name+" ImportWrapped", err)
		_, err = d.CreateKey(ctx, alg)
		checkUnsupported(t, name+" CreateKey", err)
	}
	if b.p.Count(uint32(tpm2.TPMCCImport)) != imports || b.p.Count(uint32(tpm2.TPMCCCreate)) != creates {
		t.Fatal("an unsupported key reached TPM2_Import or TPM2_Create")
	}
	// What the chip has still works.
	for _, alg := range []tpm.Algorithm{tpm.RSA2048, tpm.P256} {
		if _, err := d.CreateKey(ctx, alg); err != nil {
			t.Fatalf("CreateKey(%s): %v", alg, err)
		}
	}
}

func checkUnsupported(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, tpm.ErrUnsupported) || errors.Is(err, tpm.ErrWrongTPM) || errors.Is(err, tpm.ErrCorruptBlob) ||
		!strings.Contains(err.Error(), "unsupported by this TPM") || strings.Contains(err.Error(), "another TPM") {
		t.Fatalf("%s: %v, want only ErrUnsupported (\"unsupported by this TPM\")", what, err)
	}
}

// failingChip plays a TPM in failure mode once failed is set: every
// command but GetCapability and GetTestResult is refused with
// TPM_RC_FAILURE, and GetTestResult reports the failed self-test.
func failingChip(failed *atomic.Bool) func([]byte) []byte {
	return func(cmd []byte) []byte {
		if !failed.Load() {
			return nil
		}
		switch ccOf(cmd) {
		case tpm2.TPMCCGetCapability:
			return nil
		case tpm2.TPMCCGetTestResult:
			body := binary.BigEndian.AppendUint16(nil, 0) // outData
			return successResponse(binary.BigEndian.AppendUint32(body, uint32(tpm2.TPMRCFailure)))
		}
		return errorResponse(uint32(tpm2.TPMRCFailure))
	}
}

// TestFailureMode: a TPM in failure mode gives ErrFailureMode, not "wrong
// TPM" nor "unsupported", to every operation, and to Open.
func TestFailureMode(t *testing.T) {
	t.Parallel()
	var failed atomic.Bool
	b := startBus(t, failingChip(&failed))
	d := b.open(t, tpm.Config{})
	ctx := context.Background()
	k, err := d.CreateKey(ctx, tpm.P256)
	if err != nil {
		t.Fatal(err)
	}
	blob, err := d.Seal(ctx, []byte("secret"), nil)
	if err != nil {
		t.Fatal(err)
	}
	d.Flush(ctx) // the next signature loads the key
	failed.Store(true)
	priv, _ := rsa.GenerateKey(rand.Reader, 2048)
	s, _ := d.Signer(k)
	checks := map[string]func() error{
		"CreateKey": func() error { _, err := d.CreateKey(ctx, tpm.RSA2048); return err },
		"ImportKey": func() error { _, err := d.ImportKey(ctx, priv); return err },
		"Sign":      func() error { _, err := s.Sign(nil, sha(crypto.SHA256, nil), crypto.SHA256); return err },
		"Seal":      func() error { _, err := d.Seal(ctx, []byte("secret"), nil); return err },
		"Unseal":    func() error { _, err := d.Unseal(ctx, blob); return err },
		"Open": func() error {
			_, err := tpm.Open(tpm.Config{Address: "swtpm:" + b.p.Socket()}, nil)
			return err
		},
	}
	for what, op := range checks {
		err := op()
		if !errors.Is(err, tpm.ErrFailureMode) || errors.Is(err, tpm.ErrWrongTPM) || errors.Is(err, tpm.ErrUnsupported) {
			t.Errorf("%s in failure mode: %v, want ErrFailureMode", what, err)
		}
	}
}

// TestTransientTestParms: a TestParms the TPM answers with a warning
// (TPM_RC_RETRY, a TPM busy with itself) leaves the algorithm unknown,
// not unsupported: CheckSupport says it cannot tell while the TPM keeps
// answering so, and yes once it answers.
func TestTransientTestParms(t *testing.T) {
	t.Parallel()
	var busy atomic.Bool
	busy.Store(true)
	b := startBus(t, func(cmd []byte) []byte {
		if busy.Load() && ccOf(cmd) == tpm2.TPMCCTestParms && tpm2.TPMAlgID(binary.BigEndian.Uint16(cmd[10:12])) == tpm2.TPMAlgRSA {
			return errorResponse(uint32(tpm2.TPMRCRetry))
		}
		return nil
	})
	d := b.open(t, tpm.Config{})
	ctx := context.Background()
	if d.Supports(tpm.RSA2048) {
		t.Fatal("Supports(RSA-2048) = true though TestParms never answered")
	}
	err := d.CheckSupport(ctx, tpm.RSA2048)
	if err == nil || errors.Is(err, tpm.ErrUnsupported) || !errors.Is(err, tpm2.TPMRCRetry) {
		t.Fatalf("CheckSupport while TestParms says RETRY: %v, want an error that is not ErrUnsupported", err)
	}
	priv, _ := rsa.GenerateKey(rand.Reader, 2048)
	if _, err := d.ImportKey(ctx, priv); err == nil || errors.Is(err, tpm.ErrUnsupported) {
		t.Fatalf("ImportKey while TestParms says RETRY: %v", err)
	}
	busy.Store(false)
	if err := d.CheckSupport(ctx, tpm.RSA2048); err != nil {
		t.Fatalf("CheckSupport once TestParms answers: %v", err)
	}
	if _, err := d.ImportKey(ctx, priv); err != nil {
		t.Fatalf("ImportKey once TestParms answers: %v", err)
	}
}

// TestCorruptBlobIsNotWrongTPM: a key blob of this TPM with a byte changed
// is ErrCorruptBlob; the same blob on another TPM is ErrWrongTPM.
func TestCorruptBlobIsNotWrongTPM(t *testing.T) {
	t.Parallel()
	d, _ := open(t, tpm.Config{})
	other, _ := open(t, tpm.Config{})
	ctx := context.Background()
	for _, alg := range []tpm.Algorithm{tpm.RSA2048, tpm.P256} {
		k, err := d.CreateKey(ctx, alg)
		if err != nil {
			t.Fatal(err)
		}
		blob := k.Blob()
		blob.Private = append([]byte(nil), blob.Private...)
		blob.Private[len(blob.Private)/2] ^= 1
		damaged, err := tpm.ParseKeyBlob(blob)
		if err != nil {
			t.Fatal(err)
		}
		s, _ := d.Signer(damaged)
		_, err = s.Sign(nil, sha(crypto.SHA256, nil), crypto.SHA256)
		if !errors.Is(err, tpm.ErrCorruptBlob) || errors.Is(err, tpm.ErrWrongTPM) {
			t.Fatalf("%s: damaged blob: %v, want ErrCorruptBlob", alg, err)
		}
		s, _ = other.Signer(k)
		_, err = s.Sign(nil, sha(crypto.SHA256, nil), crypto.SHA256)
		if !errors.Is(err, tpm.ErrWrongTPM) || errors.Is(err, tpm.ErrCorruptBlob) {
			t.Fatalf("%s: blob on another TPM: %v, want ErrWrongTPM", alg, err)
		}
	}
	if _, err := tpm.ParseKeyBlob(tpm.KeyBlob{Parent: tpm.ParentSRK, Public: []byte{1, 2, 3}}); !errors.Is(err, tpm.ErrCorruptBlob) {
		t.Fatalf("unparsable public area: %v, want ErrCorruptBlob", err)
	}
}
