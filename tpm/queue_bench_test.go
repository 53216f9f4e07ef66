package tpm_test

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/brokerd/brokerd/internal/tpmbench"
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

// BenchmarkAPIUnderHandshakeFlood measures the API class's signatures
// per second with c concurrent callers, alone and while a flood of
// handshake-class signatures keeps that class's queue full (twice its
// depth of callers, each retrying a millisecond after ErrBusy), in
// alternating rounds on one swtpm. It reports the throughput ratio, the
// API's share of the signatures made during the flood, and the p99
// latencies. Both classes sign with P-256 keys, so turns and time are
// alike. With weights 8:2, an API class that always has an operation
// waiting gets 8/10 of the turns; a single caller (c1) also waits for the
// handshake in flight after each of its own signatures, since a TPM
// command cannot be interrupted. The rest of the gap is the flood's own
// CPU, taken from swtpm on a small machine. Each iteration does a fixed
// amount of work (make bench runs it once).
func BenchmarkAPIUnderHandshakeFlood(b *testing.B) {
	d, _ := open(b, tpm.Config{})
	ctx := context.Background()
	newSigner := func() *tpm.Signer {
		k, err := d.CreateKey(ctx, tpm.P256)
		if err != nil {
			b.Fatal(err)
		}
		s, _ := d.Signer(k)
		return s
	}
	api, hs := newSigner(), newSigner().WithClass(tpm.ClassHandshake)
	floodN := 2 * tpm.DefaultConfig().Depth(tpm.ClassHandshake)
	digest := sha(crypto.SHA256, []byte("bench"))
	for _, c := range []int{1, 4} {
		b.Run(fmt.Sprintf("c%d", c), func(b *testing.B) {
			const rounds, perRound = 3, 400
			var (
				idleT, floodT   time.Duration
				idleLat, floodL []time.Duration
				hsDone          atomic.Int64
				hsDuring        int64
			)
			for range b.N {
				for range rounds {
					t, lat := timedSigns(b, api, digest, perRound, c)
					idleT += t
					idleLat = append(idleLat, lat...)

					stop := make(chan struct{})
					var wg sync.WaitGroup
					for range floodN {
						wg.Go(func() {
							for {
								select {
								case <-stop:
									return
								default:
								}
								_, err := hs.Sign(nil, digest, crypto.SHA256)
								switch {
								case err == nil:
									hsDone.Add(1)
								case errors.Is(err, tpm.ErrBusy):
									time.Sleep(time.Millisecond) // a refused flooder backs off, as a client would; not ordering
								default:
									b.Error(err)
									return
								}
							}
						})
					}
					for d.Waiting()[tpm.ClassHandshake] < floodN/2-1 {
						runtime.Gosched()
					}
					before := hsDone.Load()
					t, lat = timedSigns(b, api, digest, perRound, c)
					hsDuring += hsDone.Load() - before
					close(stop)
					wg.Wait()
					floodT += t
					floodL = append(floodL, lat...)
				}
			}
			n := float64(b.N * rounds * perRound)
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(n/idleT.Seconds(), "idle-api-sign/s")
			b.ReportMetric(n/floodT.Seconds(), "flood-api-sign/s")
			b.ReportMetric(float64(hsDuring)/floodT.Seconds(), "flood-hs-sign/s")
			b.ReportMetric(idleT.Seconds()/floodT.Seconds(), "flood/idle")
			b.ReportMetric(n/(n+float64(hsDuring)), "flood-api-share")
			p99i, p99f := tpmbench.Percentile(idleLat, 99), tpmbench.Percentile(floodL, 99)
			b.ReportMetric(float64(p99i.Microseconds()), "idle-p99-µs")
			b.ReportMetric(float64(p99f.Microseconds()), "flood-p99-µs")
			b.ReportMetric(float64(p99f)/float64(p99i), "p99-flood/idle")
		})
	}
}

// timedSigns signs n times from c goroutines and returns the elapsed time
// and each signature's latency.
func timedSigns(b *testing.B, s *tpm.Signer, digest []byte, n, c int) (time.Duration, []time.Duration) {
	lat := make([]time.Duration, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range c {
		wg.Go(func() {
			for j := i; j < n; j += c {
				t0 := time.Now()
				if _, err := s.Sign(nil, digest, crypto.SHA256); err != nil {
					b.Error(err)
					return
				}
				lat[j] = time.Since(t0)
			}
		})
	}
	wg.Wait()
	return time.Since(start), lat
}
