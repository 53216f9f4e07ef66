package adversarial_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/brokerd/brokerd/config"
	"github.com/brokerd/brokerd/internal/loadgen"
	"github.com/brokerd/brokerd/internal/testpki"
)

// signBody is what the loads post: a P-256 signature in the TPM.
var signBody = []byte(`{"params":{"data":"benchmark","key_id":"any.key"}}`)

// tlsFor is a client TLS configuration with a certificate for cn ("" for
// none).
func (a *appliance) tlsFor(cn string) *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(a.ca.Cert)
	cfg := &tls.Config{RootCAs: pool, ServerName: "localhost"}
	if cn != "" {
		cert, key := a.ca.IssueKey(a.t, testpki.Leaf{Subject: pkix.Name{CommonName: cn}, ExtUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		cfg.Certificates = []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}}
	}
	return cfg
}

func (a *appliance) load(b *testing.B, workers int, d time.Duration, clients ...loadgen.Client) loadgen.LoadResult {
	r, err := loadgen.Load(context.Background(), clients, loadgen.LoadOptions{URL: a.api + "/sign", Body: signBody, Workers: workers, Duration: d})
	if err != nil {
		b.Fatal(err)
	}
	return r
}

// BenchmarkSignUnderFlood: an authenticated client's /sign, idle and while
// one uncertified address floods the API with full handshakes and both
// listeners with /health; reports the throughput ratio and p99 ratio.
// Goal: ratio ≥ 0.8, p99 under 3× idle.
func BenchmarkSignUnderFlood(b *testing.B) {
	a := start(b, options{})
	agg := []loadgen.Client{{TLS: a.tlsFor("agg-1"), Source: "127.0.0.1"}}
	const d = 3 * time.Second
	a.load(b, 4, time.Second, agg...) // warm up: connections, the key loaded
	idle := a.load(b, 4, d, agg...)
	ctx, cancel := context.WithTimeout(context.Background(), d+time.Second)
	defer cancel()
	floodDone := make(chan loadgen.FloodResult, 1)
	go func() {
		r, _ := loadgen.Flood(ctx, strings.TrimPrefix(a.api, "https://"), loadgen.FloodOptions{Source: "127.0.0.2",
			Handshakes: 8, Health: 4, Duration: d + time.Second, TLS: a.tlsFor(""), HealthURL: a.health + "/health"})
		floodDone <- r
	}()
	flooded := a.load(b, 4, d, agg...)
	fr := <-floodDone
	b.ReportMetric(flooded.SuccessesPerSec/idle.SuccessesPerSec, "flooded/idle")
	b.ReportMetric(float64(flooded.P99)/float64(idle.P99), "p99-flooded/idle")
	b.ReportMetric(idle.SuccessesPerSec, "idle-sign/s")
	b.ReportMetric(float64(fr.Handshakes.Attempts)/fr.Elapsed.Seconds(), "flood-handshakes/s")
	b.ReportMetric(float64(fr.Health.Attempts)/fr.Elapsed.Seconds(), "flood-health/s")
	b.Logf("idle %.0f/s p99 %v; flooded %.0f/s p99 %v; flood: %d handshakes (%d refused), %d /health",
		idle.SuccessesPerSec, idle.P99, flooded.SuccessesPerSec, flooded.P99, fr.Handshakes.Attempts, fr.Handshakes.Refused, fr.Health.Attempts)
}

// BenchmarkOverload: one client's /sign at 16 and at 512 concurrent
// workers that ignore Retry-After; reports signatures/s at c512 over c16.
// Goal ≥ 0.8: refusals are cheap and the TPM keeps doing useful work.
func BenchmarkOverload(b *testing.B) {
	// One client with 512 connections from one address: the admission
	// limits meant for strangers are raised, this measures what follows.
	a := start(b, options{config: func(c *config.Config) {
		c.API.MaxConnsPerIP, c.API.HandshakesPerIP, c.API.HandshakeBurstPerIP = 1024, 1e6, 1024
	}})
	agg := []loadgen.Client{{TLS: a.tlsFor("agg-1"), Source: "127.0.0.1"}}
	const d = 3 * time.Second
	a.load(b, 16, time.Second, agg...)
	c16 := a.load(b, 16, d, agg...)
	c512 := a.load(b, 512, d, agg...)
	b.ReportMetric(c512.SuccessesPerSec/c16.SuccessesPerSec, "c512/c16")
	b.ReportMetric(c16.SuccessesPerSec, "c16-sign/s")
	b.ReportMetric(c512.SuccessesPerSec, "c512-sign/s")
	b.Logf("c16 %.0f/s; c512 %.0f/s, %d refused (%v), %d transport errors", c16.SuccessesPerSec, c512.SuccessesPerSec,
		c512.Unavailable+c512.Failed, c512.Statuses, c512.TransportErrors)
}

// BenchmarkAuditFill: 10,000 refused /sign of a certified client with key
// ids of a megabyte; reports the growth of the state file and of the log
// in MB. Goal: under 20 MB together, and the appliance still signs.
func BenchmarkAuditFill(b *testing.B) {
	a := start(b, options{})
	before, _ := os.Stat(a.cfg.StatePath())
	logBefore := a.logs.Len()
	huge := strings.Repeat("k", (1<<20)-100)
	body := []byte(`{"params":{"data":"x","key_id":"` + huge + `"}}`)
	r, err := loadgen.Load(context.Background(), []loadgen.Client{{TLS: a.tlsFor("agg-1")}},
		loadgen.LoadOptions{URL: a.api + "/sign", Body: body, Workers: 8, Requests: 10000, Success: func(s int, _ []byte) bool { return s == 404 }})
	if err != nil {
		b.Fatal(err)
	}
	if r.Successes != 10000 {
		b.Fatalf("%d of 10000 refused as unknown keys: %v", r.Successes, r.Statuses)
	}
	after, _ := os.Stat(a.cfg.StatePath())
	grew := float64(after.Size()-before.Size()+int64(a.logs.Len()-logBefore)) / 1e6
	b.ReportMetric(grew, "MB-state+log")
	if status, out := post(b, a.client("agg-1"), a.api+"/sign", string(signBody)); status != 200 {
		b.Fatalf("the appliance no longer signs: %d %s", status, out)
	}
	b.Logf("10000 refusals in %v: state and log grew by %.2f MB", r.Elapsed.Round(time.Millisecond), grew)

}
