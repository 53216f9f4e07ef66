package tpm_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/brokerd/brokerd/tpm"
	"github.com/google/go-tpm/tpm2"
)

// checkNoLeaks asserts that the TPM holds exactly the objects the device
// caches: nothing left behind by failed or timed-out commands.
func checkNoLeaks(t *testing.T, d *tpm.Device) {
	t.Helper()
	ctx := context.Background()
	n, err := d.CachedObjects(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hs, err := d.TransientHandles(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != n {
		t.Fatalf("TPM holds transient handles %x, device caches %d objects", hs, n)
	}
}

func mustSign(t *testing.T, s *tpm.Signer) {
	t.Helper()
	digest := sha(crypto.SHA256, []byte("ping"))
	sig, err := s.Sign(nil, digest, crypto.SHA256)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	if !verify(s.Public(), crypto.SHA256, digest, sig) {
		t.Fatal("signature does not verify")
	}
}

func TestSwtpmKilledAndRestarted(t *testing.T) {
	t.Parallel()
	d, sw := open(t, tpm.Config{CommandTimeout: time.Second})
	ctx := context.Background()
	k, err := d.CreateKey(ctx, tpm.RSA2048)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := d.Signer(k)
	mustSign(t, s)

	sw.Kill()
	_, err = s.Sign(nil, sha(crypto.SHA256, []byte("x")), crypto.SHA256)
	if !errors.Is(err, tpm.ErrUnavailable) {
		t.Fatalf("sign with swtpm killed: %v, want ErrUnavailable", err)
	}
	if err := d.Ping(ctx); !errors.Is(err, tpm.ErrUnavailable) {
		t.Fatalf("ping with swtpm killed: %v, want ErrUnavailable", err)
	}

	sw.Restart()
	mustSign(t, s) // same Device, no reopen
	checkNoLeaks(t, d)
}

func TestSwtpmRestartedWhileIdle(t *testing.T) {
	t.Parallel()
	d, sw := open(t, tpm.Config{})
	ctx := context.Background()
	k, err := d.CreateKey(ctx, tpm.P256)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := d.Signer(k)
	mustSign(t, s) // key is now cached at a handle that the restart erases
	sw.Stop()
	sw.Restart()
	mustSign(t, s)
	checkNoLeaks(t, d)
}

func TestSwtpmStoppedMidUse(t *testing.T) {
	t.Parallel()
	const deadline = 500 * time.Millisecond
	d, sw := open(t, tpm.Config{CommandTimeout: deadline})
	ctx := context.Background()
	var signers []*tpm.Signer
	for range 3 {
		k, err := d.CreateKey(ctx, tpm.P256)
		if err != nil {
			t.Fatal(err)
		}
		s, _ := d.Signer(k)
		mustSign(t, s)
		signers = append(signers, s)
	}
	// signers[0] was evicted to make room for the others: signing with it
	// needs a TPM2_Load, which the paused TPM runs only after it resumes,
	// leaving a handle nobody flushed.
	sw.Pause()
	start := time.Now()
	_, err := signers[0].Sign(nil, sha(crypto.SHA256, []byte("x")), crypto.SHA256)
	if !errors.Is(err, tpm.ErrUnavailable) {
		t.Fatalf("sign on a stopped TPM: %v, want ErrUnavailable", err)
	}
	if waited := time.Since(start); waited > 10*deadline {
		t.Fatalf("sign on a stopped TPM returned after %v; the deadline is %v", waited, deadline)
	}
	sw.Resume()
	for _, s := range signers {
		mustSign(t, s)
	}
	checkNoLeaks(t, d)
}

func TestLeftoverHandlesFlushedAtOpen(t *testing.T) {
	t.Parallel()
	d1, sw := open(t, tpm.Config{})
	ctx := context.Background()
	for range 2 {
		k, err := d1.CreateKey(ctx, tpm.P256)
		if err != nil {
			t.Fatal(err)
		}
		s, _ := d1.Signer(k)
		mustSign(t, s)
	}
	if hs, _ := d1.TransientHandles(ctx); len(hs) != 3 {
		t.Fatalf("expected SRK + 2 keys loaded, got %x", hs)
	}
	// A crashed client leaves its objects behind; a new Device flushes them.
	d2, err := tpm.Open(tpm.Config{Address: sw.Address()}, testLogger(t))
	if err != nil {
		t.Fatalf("Open with all slots taken: %v", err)
	}
	defer d2.Close()
	if hs, _ := d2.TransientHandles(ctx); len(hs) != 1 {
		t.Fatalf("after Open: transient handles %x, want only the SRK", hs)
	}
}

func TestEKWrappedImport(t *testing.T) {
	t.Parallel()
	appliance, _ := open(t, tpm.Config{})
	other, _ := open(t, tpm.Config{})
	ctx := context.Background()
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, ek := range []tpm.Parent{tpm.ParentECCEK, tpm.ParentRSAEK} {
		ekPub, err := appliance.EndorsementKey(ctx, ek)
		if err != nil {
			t.Fatal(err)
		}
		otherEK, err := other.EndorsementKey(ctx, ek)
		if err != nil {
			t.Fatal(err)
		}
		for name, priv := range map[string]crypto.Signer{"rsa": rsaKey, "p256": ecKey} {
			t.Run(string(ek)+"/"+name, func(t *testing.T) {
				w, err := tpm.WrapKey(ekPub, priv) // no TPM involved
				if err != nil {
					t.Fatal(err)
				}
				k, err := appliance.ImportWrapped(ctx, w)
				if err != nil {
					t.Fatalf("ImportWrapped: %v", err)
				}
				if k.Blob().Parent != ek || len(k.Blob().Auth) != 32 {
					t.Fatalf("parent %s, auth %d bytes", k.Blob().Parent, len(k.Blob().Auth))
				}
				s, _ := appliance.Signer(k)
				digest := sha(crypto.SHA512, []byte("wrapped"))
				opts := crypto.SignerOpts(crypto.SHA512)
				if name == "rsa" {
					opts = &rsa.PSSOptions{Hash: crypto.SHA512, SaltLength: rsa.PSSSaltLengthEqualsHash}
				}
				sig, err := s.Sign(nil, digest, opts)
				if err != nil {
					t.Fatalf("sign: %v", err)
				}
				if name == "rsa" {
					if err := rsa.VerifyPSS(&rsaKey.PublicKey, crypto.SHA512, digest, sig, &rsa.PSSOptions{SaltLength: 64}); err != nil {
						t.Fatalf("PS512 with a wrapped key: %v", err)
					}
				} else if !ecdsa.VerifyASN1(&ecKey.PublicKey, digest, sig) {
					t.Fatal("ES with a wrapped key does not verify")
				}

				// The empty auth value the blob was made with no longer works.
				noAuth := k.Blob()
				noAuth.Auth = nil
				nk, _ := tpm.ParseKeyBlob(noAuth)
				ns, _ := appliance.Signer(nk)
				if _, err := ns.Sign(nil, digest, crypto.SHA512); err == nil {
					t.Fatal("wrapped key signs with its original empty auth value")
				}

				// Another TPM refuses the blob.
				if _, err := other.ImportWrapped(ctx, w); !errors.Is(err, tpm.ErrWrongTPM) {
					t.Fatalf("import on another TPM: %v, want ErrWrongTPM", err)
				}
				// Even when the blob claims the other TPM's EK, the TPM
				// itself refuses it: it cannot recover the seed. The file
				// was altered (its parent's name), and says so.
				forOther, err := tpm.WrapKey(otherEK, priv)
				if err != nil {
					t.Fatal(err)
				}
				forged := *w
				forged.ParentName = forOther.ParentName
				if _, err := other.ImportWrapped(ctx, &forged); !errors.Is(err, tpm.ErrCorruptBlob) || errors.Is(err, tpm.ErrWrongTPM) {
					t.Fatalf("forged parent name: %v, want ErrCorruptBlob", err)
				}
				checkDamagedWrappedKey(t, appliance, w)
			})
		}
	}
	checkNoLeaks(t, appliance)
	checkNoLeaks(t, other)
}

// checkDamagedWrappedKey: a blob for this TPM with a byte changed in its
// duplicate or its seed is damaged, not another TPM's.
func checkDamagedWrappedKey(t *testing.T, d *tpm.Device, w *tpm.WrappedKey) {
	t.Helper()
	for _, field := range []string{"duplicate", "seed"} {
		damaged := *w
		damaged.Duplicate = append([]byte(nil), w.Duplicate...)
		damaged.Seed = append([]byte(nil), w.Seed...)
		b := damaged.Seed
		if field == "duplicate" {
			b = damaged.Duplicate
		}
		b[len(b)/2] ^= 1
		if _, err := d.ImportWrapped(context.Background(), &damaged); !errors.Is(err, tpm.ErrCorruptBlob) {
			t.Fatalf("damaged %s: %v, want ErrCorruptBlob", field, err)
		}
	}
}

func TestWrapKeyRefusesWhatTheTPMCannotHold(t *testing.T) {
	t.Parallel()
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	big, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	if _, err := tpm.WrapKey(ec.Public(), big); err == nil {
		t.Fatal("wrapped a P-521 key")
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if _, err := tpm.WrapKey(p384.Public(), ec); err == nil {
		t.Fatal("accepted a P-384 key as an endorsement key")
	}
	w, err := tpm.WrapKey(ec.Public(), ec)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(w)
	if _, err := tpm.ParseWrappedKey(data); err != nil {
		t.Fatalf("ParseWrappedKey of a WrapKey result: %v", err)
	}
	// A public area with attributes brokerd does not give imported keys.
	pub, _ := tpm2.Unmarshal[tpm2.TPMTPublic](w.Public)
	pub.ObjectAttributes.AdminWithPolicy = true
	pub.AuthPolicy = tpm2.TPM2BDigest{Buffer: make([]byte, 32)}
	forged := *w
	forged.Public = tpm2.Marshal(pub)
	forgedJSON, _ := json.Marshal(&forged)
	for _, bad := range []string{``, `{}`, `{"format":"other"}`, `{"format":"brokerd-wrapped-key/1","parent":"srk"}`, string(forgedJSON)} {
		if _, err := tpm.ParseWrappedKey([]byte(bad)); err == nil {
			t.Errorf("ParseWrappedKey(%q) succeeded", bad)
		}
	}
}
