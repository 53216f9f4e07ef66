package tpm_test

import (
	"context"
	"crypto"
	"runtime"
	"testing"
	"time"

	"github.com/brokerd/brokerd/tpm"
)

// BenchmarkUncontended measures what one operation costs when nobody else
// uses the device: "queue" is an operation that sends no TPM command (the
// queue's own cost: take the token, run, give it back), the others sign on
// swtpm. Each iteration does a fixed amount of work, so the figures hold
// with -benchtime=1x (make bench); ns/op is left at zero, read ns/call and
// allocs/call.
func BenchmarkUncontended(b *testing.B) {
	d, _ := open(b, tpm.Config{})
	ctx := context.Background()
	b.Run("queue", func(b *testing.B) {
		perCall(b, 100000, func() {
			if _, err := d.CachedObjects(ctx); err != nil {
				b.Fatal(err)
			}
		})
	})
	for _, alg := range []tpm.Algorithm{tpm.P256, tpm.RSA2048} {
		b.Run("sign-"+string(alg), func(b *testing.B) {
			k, err := d.CreateKey(ctx, alg)
			if err != nil {
				b.Fatal(err)
			}
			s, _ := d.Signer(k)
			digest := sha(crypto.SHA256, []byte("bench"))
			perCall(b, 300, func() {
				if _, err := s.Sign(nil, digest, crypto.SHA256); err != nil {
					b.Fatal(err)
				}
			})
		})
	}
}

// perCall runs fn n times per benchmark iteration, after a warm-up, and
// reports its time and allocations per call.
func perCall(b *testing.B, n int, fn func()) {
	for range n / 10 {
		fn()
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	for range b.N {
		for range n {
			fn()
		}
	}
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)
	calls := float64(b.N * n)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(elapsed.Nanoseconds())/calls, "ns/call")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/calls, "allocs/call")
}
