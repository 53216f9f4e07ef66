package tpm_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/brokerd/brokerd/internal/swtpmtest"
	"github.com/brokerd/brokerd/internal/tpmproxy"
	"github.com/brokerd/brokerd/tpm"
)

// ccRSADecrypt is TPM2_RSA_Decrypt, which brokerd's RSA signatures use.
const ccRSADecrypt = 0x159

// TestFaultySignatureNeverLeaves: a TPM that returns a wrong RSA result
// (one byte flipped, as a fault would) makes Sign fail: the signature is
// checked before it is returned, since a faulty RSA-CRT signature gives
// away the key. A fault inside the chip comes back with a valid session
// HMAC (the chip computes it over its wrong result): the password session
// plays that, and the RSA self-check must catch it. In the salted session
// the same flip on the bus fails the response's HMAC first.
func TestFaultySignatureNeverLeaves(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name     string
		password bool
		want     string
	}{
		{"fault in the chip", true, "does not verify"},
		{"changed on the bus", false, "valid session HMAC"},
	} {
		t.Run(c.name, func(t *testing.T) {
			sw := swtpmtest.Start(t)
			var faulty atomic.Bool // from after the key's creation (which test-signs)
			p, err := tpmproxy.Start(t.TempDir(), sw.Socket(), tpmproxy.Options{Mutate: func(cc uint32, rsp []byte) []byte {
				if faulty.Load() && cc == ccRSADecrypt && len(rsp) > 20 {
					rsp[len(rsp)/2] ^= 0x01 // in the output data, after the header and size
				}
				return rsp
			}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { p.Close() })
			dev, err := tpm.Open(tpm.Config{Address: "swtpm:" + p.Socket()}, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { dev.Close() })
			if c.password {
				tpm.UsePasswordSessions(dev, true)
			}
			k, err := dev.CreateKey(context.Background(), tpm.RSA2048)
			if err != nil {
				t.Fatal(err)
			}
			faulty.Store(true)
			s, err := dev.Signer(k)
			if err != nil {
				t.Fatal(err)
			}
			digest := sha256.Sum256([]byte("fault"))
			sig, err := s.Sign(rand.Reader, digest[:], crypto.SHA256)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("a faulty TPM result came back as a signature: %x, %v", sig, err)
			}
			if p.Count(ccRSADecrypt) == 0 {
				t.Fatal("the signature did not go through RSA_Decrypt: the test no longer covers the path")
			}
		})
	}
}
