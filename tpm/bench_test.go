package tpm_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport/linuxudstpm"

	"github.com/brokerd/brokerd/tpm"
)

// BenchmarkSignerVsRaw measures the TPM sign rate through brokerd's
// Signer and queue against go-tpm used directly (linuxudstpm, key kept
// loaded), in alternating rounds on the same swtpm, and reports the ratio:
// the queue, the Go padding and the deadline transport should cost under 5 %.
// Run it with -benchtime=1x: each run does a fixed amount of work.
func BenchmarkSignerVsRaw(b *testing.B) {
	for _, alg := range []tpm.Algorithm{tpm.RSA2048, tpm.P256} {
		b.Run(string(alg), func(b *testing.B) {
			d, sw := open(b, tpm.Config{})
			ctx := context.Background()
			k, err := d.CreateKey(ctx, alg)
			if err != nil {
				b.Fatal(err)
			}
			s, _ := d.Signer(k)
			const rounds, perRound = 6, 150
			digest := sha(crypto.SHA256, []byte("bench"))
			var raw, signer, signer4 time.Duration
			for range b.N {
				for range rounds {
					raw += rawSign(b, sw.Socket(), k, digest, perRound)
					signer += timed(func() { signN(b, s, digest, perRound, 1) })
					signer4 += timed(func() { signN(b, s, digest, perRound, 4) })
					// Free the key's slot so the raw loop can load its copy.
					d.Forget(ctx, k)
				}
			}
			n := float64(b.N * rounds * perRound)
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(n/raw.Seconds(), "raw-sign/s")
			b.ReportMetric(n/signer.Seconds(), "signer-sign/s")
			b.ReportMetric(raw.Seconds()/signer.Seconds(), "signer/raw")
			b.ReportMetric(raw.Seconds()/signer4.Seconds(), "signer4/raw")
		})
	}
}

func timed(fn func()) time.Duration {
	start := time.Now()
	fn()
	return time.Since(start)
}

// signN signs n times from c goroutines.
func signN(b *testing.B, s *tpm.Signer, digest []byte, n, c int) {
	var wg sync.WaitGroup
	for i := range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := i; j < n; j += c {
				if _, err := s.Sign(rand.Reader, digest, crypto.SHA256); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// rawSign loads k with go-tpm on its own connection and times n signatures
// with the same TPM command brokerd uses (RSA_Decrypt over a PKCS #1 v1.5
// block for RSA, Sign for ECDSA).
func rawSign(b *testing.B, socket string, k *tpm.Key, digest []byte, n int) time.Duration {
	tr, err := linuxudstpm.Open(socket)
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Close()
	srk, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(tpm2.ECCSRKTemplate)}.Execute(tr)
	if err != nil {
		b.Fatal(err)
	}
	defer tpm2.FlushContext{FlushHandle: srk.ObjectHandle}.Execute(tr)
	blob := k.Blob()
	pub, _ := tpm2.Unmarshal[tpm2.TPMTPublic](blob.Public)
	loaded, err := tpm2.Load{
		ParentHandle: tpm2.NamedHandle{Handle: srk.ObjectHandle, Name: srk.Name},
		InPrivate:    tpm2.TPM2BPrivate{Buffer: blob.Private},
		InPublic:     tpm2.New2B(*pub),
	}.Execute(tr)
	if err != nil {
		b.Fatal(err)
	}
	defer tpm2.FlushContext{FlushHandle: loaded.ObjectHandle}.Execute(tr)
	auth := tpm2.AuthHandle{Handle: loaded.ObjectHandle, Name: loaded.Name, Auth: tpm2.PasswordAuth(blob.Auth)}
	em := make([]byte, 256)
	em[1], em[255] = 1, 1 // any value below n works for timing
	start := time.Now()
	for range n {
		if k.Algorithm() == tpm.RSA2048 {
			_, err = tpm2.RSADecrypt{KeyHandle: auth, CipherText: tpm2.TPM2BPublicKeyRSA{Buffer: em}, InScheme: tpm2.TPMTRSADecrypt{Scheme: tpm2.TPMAlgNull}}.Execute(tr)
		} else {
			_, err = tpm2.Sign{
				KeyHandle:  auth,
				Digest:     tpm2.TPM2BDigest{Buffer: digest},
				InScheme:   tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgECDSA, Details: tpm2.NewTPMUSigScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSchemeHash{HashAlg: tpm2.TPMAlgSHA256})},
				Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck, Hierarchy: tpm2.TPMRHNull},
			}.Execute(tr)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	return time.Since(start)
}
