package tpm_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"sync"
	"testing"
	"time"

	"github.com/brokerd/brokerd/internal/tpmbench"
	"github.com/brokerd/brokerd/tpm"
)

// BenchmarkSignerVsRaw measures the TPM sign rate through brokerd's
// Signer and queue against go-tpm used directly (its own connection, key
// kept loaded), in alternating rounds on the same swtpm, and reports the
// ratio: the queue, the Go padding and the deadline transport should cost
// under 5 %. Run it with -benchtime=1x: each run does a fixed amount of work.
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
			d.Flush(ctx) // the key's test signature left it loaded: free the slots NewRaw needs
			raw := tpmbench.NewRaw(b, sw.Socket(), alg.IsRSA())
			const rounds, perRound = 6, 150
			digest := sha(crypto.SHA256, []byte("bench"))
			var rawT, signer, signer4 time.Duration
			for range b.N {
				for range rounds {
					d.Flush(ctx) // free the slots the raw loop needs
					rawT += raw.Run(b, perRound)
					signer += timed(func() { signN(b, s, digest, perRound, 1) })
					signer4 += timed(func() { signN(b, s, digest, perRound, 4) })
				}
			}
			n := float64(b.N * rounds * perRound)
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(n/rawT.Seconds(), "raw-sign/s")
			b.ReportMetric(n/signer.Seconds(), "signer-sign/s")
			b.ReportMetric(rawT.Seconds()/signer.Seconds(), "signer/raw")
			b.ReportMetric(rawT.Seconds()/signer4.Seconds(), "signer4/raw")
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
