package tpm_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"encoding/binary"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/brokerd/brokerd/internal/swtpmtest"
	"github.com/brokerd/brokerd/internal/tpmproxy"
	"github.com/brokerd/brokerd/tpm"
	"github.com/google/go-tpm/tpm2"
)

// What every TPM transport shares: warnings retried.

// proxied starts a swtpm with a proxy in front and opens a device on the
// proxy with cfg.
func proxied(t testing.TB, cfg tpm.Config, opts tpmproxy.Options) (*tpm.Device, *tpmproxy.Proxy, *swtpmtest.TPM) {
	t.Helper()
	sw := swtpmtest.Start(t)
	return openProxied(t, sw, cfg, opts)
}

// signerFor makes a key of alg on d and returns its signer.
func signerFor(t testing.TB, d *tpm.Device, alg tpm.Algorithm) *tpm.Signer {
	t.Helper()
	k, err := d.CreateKey(context.Background(), alg)
	if err != nil {
		t.Fatalf("CreateKey %s: %v", alg, err)
	}
	s, err := d.Signer(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func openProxied(t testing.TB, sw *swtpmtest.TPM, cfg tpm.Config, opts tpmproxy.Options) (*tpm.Device, *tpmproxy.Proxy, *swtpmtest.TPM) {
	t.Helper()
	p, err := tpmproxy.Start(t.TempDir(), sw.Socket(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	cfg.Address = "swtpm:" + p.Socket()
	d, err := tpm.Open(cfg, testLogger(t))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d, p, sw
}

// rcAnswer is a response with only a return code.
func rcAnswer(rc tpm2.TPMRC) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(tpm2.TPMSTNoSessions))
	b = binary.BigEndian.AppendUint32(b, 10)
	return binary.BigEndian.AppendUint32(b, uint32(rc))
}

// TestWarningsRetried: a TPM that answers a signature with TPM_RC_RETRY,
// TPM_RC_YIELDED or TPM_RC_TESTING did nothing with it: the device sends
// it again (in the same session, as it is) and the signature succeeds.
// Other warnings are not retried, and retries stop at the deadline.
func TestWarningsRetried(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name      string
		rc        tpm2.TPMRC
		times     int // answered with rc before the TPM gets it
		wantErr   bool
		wantSends int // Sign commands sent; 0: more than 2
	}{
		{"retry", tpm2.TPMRCRetry, 2, false, 3},
		{"yielded", tpm2.TPMRCYielded, 1, false, 2},
		{"testing", tpm2.TPMRCTesting, 3, false, 4},
		{"lockout is not retried", tpm2.TPMRCLockout, 1, true, 1},
		{"retry until the deadline", tpm2.TPMRCRetry, 1 << 30, true, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var armed atomic.Bool
			var left atomic.Int64
			left.Store(int64(c.times))
			d, p, _ := proxied(t, tpm.Config{CommandTimeout: 300 * time.Millisecond}, tpmproxy.Options{Command: func(cmd []byte) []byte {
				if armed.Load() && binary.BigEndian.Uint32(cmd[6:10]) == uint32(tpm2.TPMCCSign) && left.Add(-1) >= 0 {
					return rcAnswer(c.rc)
				}
				return nil
			}})
			s := signerFor(t, d, tpm.P256)
			mustSign(t, s)
			armed.Store(true)
			before := p.Count(uint32(tpm2.TPMCCSign))
			digest := sha(crypto.SHA256, []byte("retried"))
			sig, err := s.Sign(nil, digest, crypto.SHA256)
			sends := p.Count(uint32(tpm2.TPMCCSign)) - before
			if c.wantErr {
				if !errors.Is(err, c.rc) {
					t.Fatalf("sign: %v, want %v", err, c.rc)
				}
			} else if err != nil || !ecdsa.VerifyASN1(s.Public().(*ecdsa.PublicKey), digest, sig) {
				t.Fatalf("sign after %d×%v: %v", c.times, c.rc, err)
			}
			if (c.wantSends == 0 && sends <= 2) || (c.wantSends != 0 && sends != c.wantSends) {
				t.Fatalf("TPM2_Sign sent %d times, want %d (0: more than 2)", sends, c.wantSends)
			}
		})
	}
}
