package adversarial_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

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

// load posts signBody to /sign from workers over clients for d, after a
// warm-up on the same connections.
func (a *appliance) load(b *testing.B, workers int, warmup, d time.Duration, clients ...loadgen.Client) loadgen.LoadResult {
	r, err := loadgen.Load(context.Background(), clients, loadgen.LoadOptions{URL: a.api + "/sign", Body: signBody, Workers: workers,
		Warmup: warmup, Duration: d})
	if err != nil {
		b.Fatal(err)
	}
	return r
}

// BenchmarkSignUnderFlood: an authenticated client's /sign from
// 127.0.0.1, idle and while one uncertified address, 127.0.0.2 (its own,
// so that the per-address limits can tell it apart), floods the API with
// full handshakes and both listeners with /health; reports the throughput
// ratio and the p99 ratio. Goal: ratio ≥ 0.8, p99 under 3× idle.
//
// The flood is a process of its own (floodProcess) at the lowest CPU
// priority: on a LAN the flooder spends its own cores, here it shares
// brokerd's two, so it gets the time brokerd leaves and takes the
// appliance's cores only through the work it makes brokerd do. It
// replays a ClientHello and hangs up at the server's first record, as a
// flooder would, and reports what it did.
func BenchmarkSignUnderFlood(b *testing.B) {
	a := start(b, options{})
	agg := []loadgen.Client{{TLS: a.tlsFor("agg-1"), Source: "127.0.0.1"}}
	const d = 3 * time.Second
	idle := a.load(b, 4, time.Second, d, agg...) // the warm-up: connections, the key loaded
	flood := a.startFlood(b, d+time.Second)
	flooded := a.load(b, 4, 0, d, agg...)
	fr := flood()
	b.ReportMetric(flooded.SuccessesPerSec/idle.SuccessesPerSec, "flooded/idle")
	b.ReportMetric(float64(flooded.P99)/float64(idle.P99), "p99-flooded/idle")
	b.ReportMetric(idle.SuccessesPerSec, "idle-sign/s")
	b.ReportMetric(float64(fr.Handshakes.Attempts)/fr.Elapsed.Seconds(), "flood-handshakes/s")
	b.ReportMetric(float64(fr.Health.Attempts)/fr.Elapsed.Seconds(), "flood-health/s")
	b.ReportMetric(0, "ns/op")
	b.Logf("idle %.0f/s p99 %v; flooded %.0f/s p99 %v, %d transport errors; flood: %d handshakes (%d reset or refused), %d /health",
		idle.SuccessesPerSec, idle.P99.Round(time.Microsecond), flooded.SuccessesPerSec, flooded.P99.Round(time.Microsecond),
		flooded.TransportErrors, fr.Handshakes.Attempts, fr.Handshakes.Refused, fr.Health.Attempts)
	if flooded.TransportErrors+idle.TransportErrors > 0 {
		b.Errorf("the authenticated client had transport errors: first %v", firstError(idle, flooded))
	}
}

// floodEnv carries floodProcess's options (JSON) to the child.
const floodEnv = "BROKERD_ADVERSARIAL_FLOOD"

// floodArgs is what the child floods.
type floodArgs struct {
	Target, HealthURL, Source string
	Duration                  time.Duration
}

// startFlood starts the flood process for d and returns a function that
// waits for its result.
func (a *appliance) startFlood(b *testing.B, d time.Duration) func() loadgen.FloodResult {
	args, _ := json.Marshal(floodArgs{Target: strings.TrimPrefix(a.api, "https://"), HealthURL: a.health + "/health",
		Source: "127.0.0.2", Duration: d})
	cmd := exec.Command("nice", "-n", "19", os.Args[0], "-test.run", "^TestFloodProcess$")
	cmd.Env = append(os.Environ(), floodEnv+"="+string(args))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		b.Fatalf("start the flood: %v", err)
	}
	return func() loadgen.FloodResult {
		if err := cmd.Wait(); err != nil {
			b.Fatalf("the flood: %v: %s", err, out.String())
		}
		var r loadgen.FloodResult
		line, _, _ := strings.Cut(out.String(), "\n")
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			b.Fatalf("the flood's result: %v: %s", err, out.String())
		}
		return r
	}
}

// TestFloodProcess is the flood of BenchmarkSignUnderFlood when the
// benchmark starts this binary as its child; otherwise it is skipped.
// It prints the flood's result as JSON on its first line.
func TestFloodProcess(t *testing.T) {
	env := os.Getenv(floodEnv)
	if env == "" {
		t.Skip("the flood process of BenchmarkSignUnderFlood")
	}
	var args floodArgs
	if err := json.Unmarshal([]byte(env), &args); err != nil {
		t.Fatal(err)
	}
	r, err := loadgen.Flood(context.Background(), args.Target, loadgen.FloodOptions{Source: args.Source, Handshakes: 8, Health: 4,
		Duration: args.Duration, TLS: &tls.Config{ServerName: "localhost", InsecureSkipVerify: true}, HealthURL: args.HealthURL,
		AbortAfterServerHello: true})
	if err != nil {
		t.Fatal(err)
	}
	r.Handshakes.FirstError, r.Health.FirstError = nil, nil // interfaces: no JSON
	out, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("%s\n", out)
}

// fleet is one certified client (one certificate) on n loopback
// addresses, 127.0.1.1 on: a pool of connections spread over hosts, each
// within the per-address limits meant for strangers. Its connections
// share a session cache, so that they resume rather than sign a full
// handshake each, as a client's pool does.
func (a *appliance) fleet(cn string, n int) []loadgen.Client {
	cfg := a.tlsFor(cn)
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(64)
	clients := make([]loadgen.Client, n)
	for i := range clients {
		clients[i] = loadgen.Client{TLS: cfg, Source: fmt.Sprintf("127.0.1.%d", i+1)}
	}
	return clients
}

// BenchmarkOverload: one client's /sign at 16 and at 512 concurrent
// workers that ignore Retry-After; reports signatures/s at c512 over c16.
// Goal ≥ 0.8: refusals are cheap and the TPM keeps doing useful work.
// Each load is measured after a second's warm-up on its connections: the
// overload of a client whose pool is open, not the opening of 512
// connections.
// The admission limits stay at their defaults: the client's 512
// connections come from 16 addresses, 32 each.
func BenchmarkOverload(b *testing.B) {
	a := start(b, options{})
	agg := a.fleet("agg-1", 16)
	const d = 3 * time.Second
	c16 := a.load(b, 16, time.Second, d, agg...)
	c512 := a.load(b, 512, time.Second, d, agg...)
	b.ReportMetric(c512.SuccessesPerSec/c16.SuccessesPerSec, "c512/c16")
	b.ReportMetric(c16.SuccessesPerSec, "c16-sign/s")
	b.ReportMetric(c512.SuccessesPerSec, "c512-sign/s")
	b.ReportMetric(float64(c512.Unavailable+c512.Failed)/c512.Elapsed.Seconds(), "c512-refused/s")
	b.ReportMetric(float64(c512.TransportErrors), "c512-transport-errors")
	b.ReportMetric(0, "ns/op")
	b.Logf("c16 %.0f/s; c512 %.0f/s, %d refused (%v), %d of the 503s with Retry-After, %d transport errors, slowest answer %v",
		c16.SuccessesPerSec, c512.SuccessesPerSec, c512.Unavailable+c512.Failed, c512.Statuses, c512.RetryAfter,
		c512.TransportErrors, c512.Longest.Round(time.Millisecond))
	if c16.TransportErrors+c512.TransportErrors > 0 {
		b.Errorf("transport errors: first %v", firstError(c16, c512))
	}
}

// firstError is the first transport error of the results.
func firstError(rs ...loadgen.LoadResult) error {
	for _, r := range rs {
		if r.FirstTransportError != nil {
			return r.FirstTransportError
		}
	}
	return nil
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
	b.ReportMetric(0, "ns/op")
	b.Logf("10000 refusals in %v: state and log grew by %.2f MB", r.Elapsed.Round(time.Millisecond), grew)
}
