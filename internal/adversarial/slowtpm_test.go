package adversarial_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/brokerd/brokerd/internal/loadgen"
	"github.com/brokerd/brokerd/internal/tpmproxy"
)

// ccSign is TPM2_Sign: the P-256 signatures of /sign with any.key.
const ccSign = 0x15D

// restOfRequest is what a /sign takes besides its wait and its signature:
// TLS, JSON and the audit record's fsync.
const restOfRequest = 250 * time.Millisecond

// BenchmarkSlowTPM is `make bench-slowtpm`: the in-process appliance with
// its TPM behind the slow-TPM profile that BROKERD_TPM_PROFILE names
// (testdata/tpm-profiles/slb9670.toml), loaded by one authenticated client
// with /sign (a P-256 key in the TPM) at concurrency 1, 8 and 32, then
// 1,000 makeRequests to a bank with the QWAC. It prints signatures/s
// against the profile's limit (one TPM2_Sign at a time), p50/p99, the 503s
// with Retry-After once the TPM's wait budget (tpm.queue_wait) is
// exceeded, and full bank handshakes per 1,000 makeRequests.
//
// Goals (issue 13): at c8, at least 0.9 of the profile's limit; at c32,
// no answer, success or 503, slower than the wait budget. The benchmark
// fails when brokerd does worse than its queue guarantees today: every 503
// with Retry-After, and no answer slower than the budget plus the one
// signature that may start just before it runs out (and restOfRequest).
func BenchmarkSlowTPM(b *testing.B) {
	if os.Getenv(tpmproxy.ProfileEnv) == "" {
		b.Skip("set " + tpmproxy.ProfileEnv + " to a profile file (make bench-slowtpm does)")
	}
	a := start(b, options{})
	limit, sig := a.profile.Rate(ccSign), a.profile.Delay(ccSign)
	budget := a.cfg.TPM.QueueWait.Duration
	// One session cache for every load: the workers' connections resume
	// the session of the first, so the server's TLS key (in the TPM too)
	// does not sign a full handshake per connection.
	cfg := a.tlsFor("agg-1")
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(64)
	agg := []loadgen.Client{{TLS: cfg, Source: "127.0.0.1"}}
	a.load(b, 1, 0, 2*time.Second, agg...) // the full handshake, the key loaded
	type run struct {
		name  string
		r     loadgen.LoadResult
		signs int
	}
	var runs []run
	for _, c := range []struct {
		workers int
		d       time.Duration
	}{{1, 5 * time.Second}, {8, 10 * time.Second}, {32, 15 * time.Second}} {
		before := a.proxy.Count(ccSign)
		r := a.load(b, c.workers, 0, c.d, agg...)
		runs = append(runs, run{fmt.Sprintf("c%d", c.workers), r, a.proxy.Count(ccSign) - before})
	}
	full, resumed, signs := a.bankCalls(b, 1000)

	var out strings.Builder
	fmt.Fprintf(&out, "profile %s (%s): limit %.2f P-256 signatures/s (TPM2_Sign %v, one at a time); wait budget (tpm.queue_wait) %v\n",
		a.profile.Name, a.profile.File, limit, sig, budget)
	// TPM-sig/s counts every TPM2_Sign: /sign's, full handshakes' (the
	// server's TLS key), and the one that was running when the load ended
	// (its request is cut, not counted).
	fmt.Fprintf(&out, "%-4s %8s %8s %9s %9s %9s %9s %6s %11s %6s\n", "", "sign/s", "/limit", "TPM-sig/s", "p50", "p99", "slowest", "503", "Retry-After", "other")
	for _, r := range runs {
		fmt.Fprintf(&out, "%-4s %8.2f %8.2f %9.2f %9v %9v %9v %6d %11d %6d\n", r.name, r.r.SuccessesPerSec, r.r.SuccessesPerSec/limit,
			float64(r.signs)/r.r.Elapsed.Seconds(), r.r.P50.Round(time.Millisecond), r.r.P99.Round(time.Millisecond),
			r.r.Longest.Round(time.Millisecond), r.r.Unavailable, r.r.RetryAfter, r.r.Failed+r.r.TransportErrors)
		b.ReportMetric(r.r.SuccessesPerSec/limit, r.name+"/limit")
		b.ReportMetric(float64(r.r.P99.Milliseconds()), r.name+"-p99-ms")
	}
	fmt.Fprintf(&out, "makeRequest: %d full bank handshakes per 1,000 calls (%d resumed); TPM signatures meanwhile: %d "+
		"(QWAC, server key, audit checkpoints)\n", full, resumed, signs)
	b.ReportMetric(float64(full), "full-handshakes/1000-makeRequests")
	c8, c32 := runs[1].r, runs[2].r
	fmt.Fprintf(&out, "goal c8 >= 0.9 of the limit: %s (%.2f)\n", verdict(c8.SuccessesPerSec >= 0.9*limit), c8.SuccessesPerSec/limit)
	fmt.Fprintf(&out, "goal c32 no answer slower than the wait budget %v: %s (slowest %v; %d refused with 503, %d of them with Retry-After)\n",
		budget, verdict(c32.Longest <= budget), c32.Longest.Round(time.Millisecond), c32.Unavailable, c32.RetryAfter)
	// What the queue guarantees today: the budget bounds the wait for
	// the TPM; the operation that gets it just before the budget runs
	// out still takes its signature, and every request its TLS, JSON and
	// audit record (an fsync: tens of ms, more on a busy disk).
	bound := budget + sig + restOfRequest
	fmt.Fprintf(&out, "bound c32 slowest <= budget + one signature + %v for the rest of the request = %v: %s\n",
		restOfRequest, bound, verdict(c32.Longest <= bound))
	b.Log(strings.TrimSuffix(out.String(), "\n")) // at most 10 lines: go test cuts a benchmark's log there
	if c8.SuccessesPerSec < 0.9*limit || c32.Longest > bound || c32.RetryAfter != c32.Unavailable || c32.Failed+c32.TransportErrors > 0 {
		b.Error("brokerd does worse than its queue guarantees (see above)")
	}
	b.ReportMetric(0, "ns/op")
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

// bankCalls sends n makeRequests, one after another, with the QWAC, and
// returns the bank's full and resumed handshakes and the TPM signatures
// they took.
func (a *appliance) bankCalls(b *testing.B, n int) (full, resumed int64, signs int) {
	body := fmt.Sprintf(`{"params":{"request":{"method":"GET","origin":%q,"path":"/echo/slow-tpm"%s}}}`, a.bank.URL, withQWAC)
	full0, resumed0 := a.bank.Handshakes()
	signs0 := a.proxy.Count(ccSign)
	r, err := loadgen.Load(context.Background(), []loadgen.Client{{TLS: a.tlsFor("agg-1")}},
		loadgen.LoadOptions{URL: a.api + "/makeRequest", Body: []byte(body), Workers: 1, Requests: n})
	if err != nil {
		b.Fatal(err)
	}
	if r.Successes != int64(n) {
		b.Fatalf("%d of %d makeRequests succeeded: %v", r.Successes, n, r.Statuses)
	}
	full1, resumed1 := a.bank.Handshakes()
	return full1 - full0, resumed1 - resumed0, a.proxy.Count(ccSign) - signs0
}
