package tpm_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"strings"
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
// away the key.
func TestFaultySignatureNeverLeaves(t *testing.T) {
	sw := swtpmtest.Start(t)
	p, err := tpmproxy.Start(t.TempDir(), sw.Socket(), tpmproxy.Options{Mutate: func(cc uint32, rsp []byte) []byte {
		if cc == ccRSADecrypt && len(rsp) > 20 {
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
	k, err := dev.CreateKey(context.Background(), tpm.RSA2048)
	if err != nil {
		t.Fatal(err)
	}
	s, err := dev.Signer(k)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("fault"))
	sig, err := s.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Fatalf("a faulty TPM result came back as a signature: %x, %v", sig, err)
	}
	if p.Count(ccRSADecrypt) == 0 {
		t.Fatal("the signature did not go through RSA_Decrypt: the test no longer covers the path")
	}
}
