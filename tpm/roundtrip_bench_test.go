package tpm_test

import (
	"context"
	"crypto"
	"testing"

	"github.com/brokerd/brokerd/internal/tpmproxy"
	"github.com/brokerd/brokerd/tpm"
)

// BenchmarkRoundTrips counts the TPM commands a signature costs, as a
// proxy in front of swtpm sees them, under swtpm's rules and under a
// kernel resource manager's (played on swtpm; what the kernel itself adds
// around each command, context loads and saves of the objects and the
// session it keeps for brokerd, is not seen here): with the key loaded
// ("cached"), and signing with two keys in turn ("switch"), with a
// transient storage root key and with a persistent one. sessions/sign
// counts the salted sessions started per signature: one is kept across
// signatures. Run it with -benchtime=1x: each run signs a fixed number of
// times.
func BenchmarkRoundTrips(b *testing.B) {
	for _, c := range []struct {
		name        string
		rm, persist bool
	}{{"swtpm", false, false}, {"resource-manager", true, false}, {"resource-manager-persistent-srk", true, true}} {
		for _, alg := range []tpm.Algorithm{tpm.P256, tpm.RSA2048} {
			b.Run(c.name+"/"+string(alg), func(b *testing.B) {
				cfg := tpm.Config{}
				if c.rm {
					cfg = tpm.ResourceManagerRules(cfg)
				}
				d, p, _ := proxied(b, cfg, tpmproxy.Options{})
				if c.persist {
					if _, err := d.PersistSRK(context.Background()); err != nil {
						b.Fatal(err)
					}
				}
				one, other := signerFor(b, d, alg), signerFor(b, d, alg)
				digest := sha(crypto.SHA256, []byte("round trips"))
				const n = 100
				var cached, switched, sessions float64
				for range b.N {
					signN(b, one, digest, 1, 1) // loaded, in a session
					before, started := p.Total(), tpm.SessionsStarted(d)
					signN(b, one, digest, n, 1)
					cached += float64(p.Total()-before) / n
					sessions += float64(tpm.SessionsStarted(d)-started) / n
					before = p.Total()
					for range n / 2 {
						signN(b, other, digest, 1, 1)
						signN(b, one, digest, 1, 1)
					}
					switched += float64(p.Total()-before) / n
				}
				b.ReportMetric(0, "ns/op")
				b.ReportMetric(cached/float64(b.N), "tpm-cmds/sign")
				b.ReportMetric(switched/float64(b.N), "tpm-cmds/switch")
				b.ReportMetric(sessions/float64(b.N), "sessions/sign")
			})
		}
	}
}
