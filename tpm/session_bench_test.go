package tpm_test

import (
	"context"
	"crypto"
	"slices"
	"testing"

	"github.com/brokerd/brokerd/tpm"
)

// BenchmarkSignSession measures what the salted session costs a
// signature, against the password session brokerd used before (the key's
// auth value in clear on the bus), in alternating rounds on one swtpm:
//
//   - password-sign/s, salted-sign/s and salted/password: the rates and
//     their ratio on swtpm, where a signature is cheap and the session's
//     HMAC and parameter encryption weigh the most;
//   - added-µs/sign: the difference per signature, in the TPM and in Go;
//   - session-setup-ms: a new salted session (TPM2_StartAuthSession with
//     an ECDH salt, then the first signature in it) over a signature in
//     an open one: paid once, and again only after an error or a reset;
//   - tpm-commands/sign: round trips per signature in the salted session
//     (counted through a proxy): 1, as with a password.
//
// On a slow chip the added cost is (added round trips × the chip's
// per-command latency) + the chip's HMAC over a few hundred bytes per
// signature; with no round trip added, that is the HMAC alone.
// Run it with -benchtime=1x: each run does a fixed amount of work.
func BenchmarkSignSession(b *testing.B) {
	for _, alg := range []tpm.Algorithm{tpm.RSA2048, tpm.P256} {
		b.Run(string(alg), func(b *testing.B) {
			bus := startBus(b, nil)
			d := bus.open(b, tpm.Config{})
			ctx := context.Background()
			k, err := d.CreateKey(ctx, alg)
			if err != nil {
				b.Fatal(err)
			}
			s, _ := d.Signer(k)
			digest := sha(crypto.SHA256, []byte("bench"))
			sign := func() {
				if _, err := s.Sign(nil, digest, crypto.SHA256); err != nil {
					b.Fatal(err)
				}
			}
			sign() // loads the key and starts the session
			before := bus.p.Total()
			const counted = 50
			for range counted {
				sign()
			}
			commands := float64(bus.p.Total()-before) / counted

			// The rates, directly on a swtpm of their own (no proxy).
			d, _ = open(b, tpm.Config{})
			k, err = d.CreateKey(ctx, alg)
			if err != nil {
				b.Fatal(err)
			}
			s, _ = d.Signer(k)
			// Short alternating rounds, and medians: on a shared machine a
			// long round can meet someone else's load.
			const rounds, perRound = 30, 50
			var password, salted, ratio, added, setup []float64
			for range b.N {
				for range rounds {
					tpm.UsePasswordSessions(d, true)
					p := timed(func() { signN(b, s, digest, perRound, 1) }).Seconds() / perRound
					tpm.UsePasswordSessions(d, false)
					sl := timed(func() { signN(b, s, digest, perRound, 1) }).Seconds() / perRound
					password, salted = append(password, p), append(salted, sl)
					ratio, added = append(ratio, p/sl), append(added, sl-p)
					tpm.DropSession(d)
					first := timed(sign)
					setup = append(setup, (first - timed(sign)).Seconds())
				}
			}
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(1/median(password), "password-sign/s")
			b.ReportMetric(1/median(salted), "salted-sign/s")
			b.ReportMetric(median(ratio), "salted/password")
			b.ReportMetric(median(added)*1e6, "added-µs/sign")
			b.ReportMetric(median(setup)*1e3, "session-setup-ms")
			b.ReportMetric(commands, "tpm-commands/sign")
		})
	}
}

func median(v []float64) float64 {
	v = slices.Sorted(slices.Values(v))
	return v[len(v)/2]
}
