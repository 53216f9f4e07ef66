package tpm_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/brokerd/brokerd/internal/swtpmtest"
	"github.com/brokerd/brokerd/internal/tpmproxy"
	"github.com/brokerd/brokerd/tpm"
)

// TestSealToManyPCRs: a TPM returns at most eight PCR values per
// TPM2_PCR_Read; a key sealed to more is bound to all of them, and
// unseals.
func TestSealToManyPCRs(t *testing.T) {
	t.Parallel()
	b := startBus(t, nil)
	d := b.open(t, tpm.Config{})
	ctx := context.Background()
	secret := []byte("0123456789abcdef0123456789abcdef")
	pcrs := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 16}
	blob, err := d.Seal(ctx, secret, pcrs)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(b.commandsWith(tpm2.TPMCCPCRRead)); n < 2 {
		t.Fatalf("%d TPM2_PCR_Read for %d PCRs: not read in rounds", n, len(pcrs))
	}
	if got, err := d.Unseal(ctx, blob); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Unseal = %q, %v", got, err)
	}
}

// firstPCROnly makes a TPM2_PCR_Read response carry only the first PCR
// it read (a TPM may return fewer than asked, and says which).
func firstPCROnly(cc uint32, rsp []byte) []byte {
	if tpm2.TPMCC(cc) != tpm2.TPMCCPCRRead || binary.BigEndian.Uint32(rsp[6:10]) != 0 {
		return rsp
	}
	// header, update counter, one selection: count, hash, size, bitmap
	sel := rsp[10+4+4+2+1 : 10+4+4+2+1+3]
	for i, first := range sel {
		if first != 0 {
			clear(sel)
			sel[i] = first & -first
			break
		}
	}
	digests := rsp[10+4+4+2+1+3:]
	first := digests[4 : 4+2+int(binary.BigEndian.Uint16(digests[4:]))]
	out := append([]byte(nil), rsp[:10+4+4+2+1+3]...)
	out = binary.BigEndian.AppendUint32(out, 1)
	out = append(out, first...)
	binary.BigEndian.PutUint32(out[2:6], uint32(len(out)))
	return out
}

// TestSealHonoursTheSelectionRead: on a TPM that returns one PCR per
// TPM2_PCR_Read, the policy is built from what each read returned (the
// key unseals, so the policy matches the TPM's own PolicyPCR), and a PCR
// change afterwards still breaks it.
func TestSealHonoursTheSelectionRead(t *testing.T) {
	t.Parallel()
	sw := swtpmtest.Start(t)
	p, err := tpmproxy.Start(t.TempDir(), sw.Socket(), tpmproxy.Options{Mutate: firstPCROnly})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	d, err := tpm.Open(tpm.Config{Address: "swtpm:" + p.Socket()}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	ctx := context.Background()
	secret := []byte("0123456789abcdef0123456789abcdef")
	blob, err := d.Seal(ctx, secret, []int{7, 16, 23})
	if err != nil {
		t.Fatal(err)
	}
	if n := p.Count(uint32(tpm2.TPMCCPCRRead)); n < 3 {
		t.Fatalf("%d TPM2_PCR_Read for 3 PCRs returned one at a time", n)
	}
	if got, err := d.Unseal(ctx, blob); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Unseal = %q, %v", got, err)
	}
	extendPCR16(t, sw)
	if _, err := d.Unseal(ctx, blob); err == nil {
		t.Fatal("unsealed after PCR 16 changed")
	}
}

// TestSealWithoutTheBank: a TPM that returns none of the PCRs asked for
// (no SHA-256 bank) makes Seal fail rather than bind to nothing.
func TestSealWithoutTheBank(t *testing.T) {
	t.Parallel()
	b := startBus(t, func(cmd []byte) []byte {
		if ccOf(cmd) == tpm2.TPMCCPCRRead {
			return successResponse(make([]byte, 4+4+4)) // counter, no selection, no digests
		}
		return nil
	})
	d := b.open(t, tpm.Config{})
	_, err := d.Seal(context.Background(), []byte("secret"), []int{7})
	if err == nil || !strings.Contains(err.Error(), "SHA-256 bank") {
		t.Fatalf("Seal without a SHA-256 bank: %v", err)
	}
}

// TestNothingReportedBeforeItWorks: a create whose test signature fails,
// and a seal whose test unseal fails, fail themselves, and leave no
// object behind.
func TestNothingReportedBeforeItWorks(t *testing.T) {
	t.Parallel()
	var broken atomic.Bool
	sw := swtpmtest.Start(t)
	p, err := tpmproxy.Start(t.TempDir(), sw.Socket(), tpmproxy.Options{Mutate: func(cc uint32, rsp []byte) []byte {
		switch tpm2.TPMCC(cc) {
		case tpm2.TPMCCSign, tpm2.TPMCCRSADecrypt, tpm2.TPMCCUnseal:
			if broken.Load() && len(rsp) > 20 {
				rsp[len(rsp)-40] ^= 1
			}
		}
		return rsp
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	d, err := tpm.Open(tpm.Config{Address: "swtpm:" + p.Socket()}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	ctx := context.Background()
	broken.Store(true)
	for _, alg := range []tpm.Algorithm{tpm.RSA2048, tpm.P256} {
		if k, err := d.CreateKey(ctx, alg); err == nil || !strings.Contains(err.Error(), "test signature") {
			t.Fatalf("CreateKey(%s) with a TPM that signs wrong = %v, %v", alg, k, err)
		}
	}
	if _, err := d.Seal(ctx, []byte("secret"), nil); err == nil || !strings.Contains(err.Error(), "test unseal") {
		t.Fatalf("Seal with a TPM that unseals wrong: %v", err)
	}
	cached, err := d.CachedObjects(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if hs, err := d.TransientHandles(ctx); err != nil || len(hs) != cached || cached > 1 {
		t.Fatalf("after failed creates: %d cached objects, transient handles %x (%v); want at most the SRK", cached, hs, err)
	}
	broken.Store(false)
	if _, err := d.CreateKey(ctx, tpm.P256); err != nil {
		t.Fatal(err)
	}
}

func TestPCRWarnings(t *testing.T) {
	t.Parallel()
	w := tpm.PCRWarnings([]int{7, 16, 20})
	if len(w) != 3 || !strings.Contains(w[0], "PCR 7") || !strings.Contains(w[0], "dbx") ||
		!strings.Contains(w[1], "PCR 16") || !strings.Contains(w[2], "PCR 20") {
		t.Fatalf("PCRWarnings = %q", w)
	}
}
