package broker_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/brokerd/brokerd/internal/mockbank"
	"github.com/brokerd/brokerd/internal/testpki"
	"github.com/brokerd/brokerd/internal/tpmbench"
	"github.com/brokerd/brokerd/keys"
	"github.com/brokerd/brokerd/tpm"
)

// sign posts one /sign request and fails on anything but 200.
func (s *stack) sign(tb testing.TB, key string) { s.signAt(tb, s.url, key) }

func (s *stack) signAt(tb testing.TB, base, key string) {
	body := fmt.Sprintf(`{"params":{"data":"bench payload","key_id":%q}}`, key)
	resp, err := s.client.Post(base+"/sign", "application/json", bytes.NewBufferString(body))
	if err != nil {
		tb.Fatal(err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		tb.Fatalf("/sign: %d %s", resp.StatusCode, out)
	}
}

// load sends n requests from c goroutines over keep-alive connections and
// returns the wall time and every request's latency.
func load(c, n int, fn func()) (time.Duration, []time.Duration) {
	lat := make([]time.Duration, n)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += c {
				t := time.Now()
				fn()
				lat[i] = time.Since(t)
			}
		}()
	}
	wg.Wait()
	return time.Since(start), lat
}

func reportLatency(b *testing.B, name string, lat []time.Duration) {
	b.ReportMetric(float64(tpmbench.Percentile(lat, 50).Microseconds())/1000, name+"-p50-ms")
	b.ReportMetric(float64(tpmbench.Percentile(lat, 99).Microseconds())/1000, name+"-p99-ms")
}

// BenchmarkSignTPM: POST /sign over keep-alive mutual TLS with a TPM-resident
// RSA-2048 key, at concurrency 1 and 16, against the raw TPM sign rate
// measured in alternating rounds on the same swtpm (goal: ≥ 0.9).
func BenchmarkSignTPM(b *testing.B) {
	s := newStack(b, stackOptions{})
	s.dev.Flush(context.Background())
	raw := tpmbench.NewRaw(b, s.sw.Socket(), true)
	load(16, 64, func() { s.sign(b, "rsa.key") }) // open the connections (handshakes) first
	const rounds, perRound = 5, 160
	var rawT, t1, t16 time.Duration
	var lat1, lat16 []time.Duration
	for range b.N {
		for range rounds {
			s.dev.Flush(context.Background()) // free the slots the raw loop needs
			rawT += raw.Run(b, perRound)
			d, l := load(1, perRound, func() { s.sign(b, "rsa.key") })
			t1, lat1 = t1+d, append(lat1, l...)
			d, l = load(16, perRound, func() { s.sign(b, "rsa.key") })
			t16, lat16 = t16+d, append(lat16, l...)
		}
	}
	n := float64(b.N * rounds * perRound)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(n/rawT.Seconds(), "raw-tpm-sign/s")
	b.ReportMetric(n/t1.Seconds(), "c1-sign/s")
	b.ReportMetric(n/t16.Seconds(), "c16-sign/s")
	b.ReportMetric(rawT.Seconds()/t1.Seconds(), "c1/raw")
	b.ReportMetric(rawT.Seconds()/t16.Seconds(), "c16/raw")
	reportLatency(b, "c1", lat1)
	reportLatency(b, "c16", lat16)
}

// BenchmarkSignSealed: POST /sign with the sealed RSA-4096 key at
// concurrency 1 and 16, against Go's own rsa.SignPKCS1v15 with the same key
// on all cores, in alternating rounds (goal for c16: ≥ 0.8).
func BenchmarkSignSealed(b *testing.B) {
	s := newStack(b, stackOptions{})
	load(16, 64, func() { s.sign(b, "sealed.key") })
	workers := runtime.GOMAXPROCS(0)
	const rounds, perRound = 5, 96
	var goT, t1, t16 time.Duration
	var lat1, lat16 []time.Duration
	for range b.N {
		for range rounds {
			d, _ := load(workers, perRound, func() {
				sum := sha256.Sum256([]byte("bench payload"))
				if _, err := rsa.SignPKCS1v15(rand.Reader, s.sealed, crypto.SHA256, sum[:]); err != nil {
					b.Fatal(err)
				}
			})
			goT += d
			d, l := load(1, perRound, func() { s.sign(b, "sealed.key") })
			t1, lat1 = t1+d, append(lat1, l...)
			d, l = load(16, perRound, func() { s.sign(b, "sealed.key") })
			t16, lat16 = t16+d, append(lat16, l...)
		}
	}
	n := float64(b.N * rounds * perRound)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(n/goT.Seconds(), "go-allcores-sign/s")
	b.ReportMetric(n/t16.Seconds(), "c16-sign/s")
	b.ReportMetric(goT.Seconds()/t16.Seconds(), "c16/go")
	b.ReportMetric(n/t1.Seconds(), "c1-sign/s")
	reportLatency(b, "c1", lat1)
	reportLatency(b, "c16", lat16)
}

// BenchmarkMakeRequest: full TLS handshakes (each a TPM signature with the
// QWAC) per 1,000 sequential makeRequests to one origin (goal: at most 5),
// and throughput at concurrency 8 with a TPM-resident RSA-2048 QWAC against
// the same load sent straight to the bank by a Go client holding a key in
// memory (goal: at least 0.8), for an instant bank and one that takes 20 ms
// to answer, as real banks take longer still.
func BenchmarkMakeRequest(b *testing.B) {
	bank := mockbank.Start(b, mockbank.Options{})
	s, agg := bankStack(b, stackOptions{bank: bank})
	call := func(path string) func() {
		body := `{"params":{"request":{"method":"GET","origin":"` + bank.URL + `","path":"` + path + `","tls":{"cert_path":"qwac.crt","key_path":"qwac.key"}}}}`
		return func() {
			status, out := post(b, agg, s.url+"/makeRequest", body)
			if status != 200 {
				b.Fatalf("makeRequest: %d %s", status, out)
			}
		}
	}
	full0, _ := s.out.Handshakes()
	for range 1000 {
		call("/echo/seq")()
	}
	full1, resumed1 := s.out.Handshakes()

	// The direct client: a software RSA-2048 key certified by the same QTSP.
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	cert := bank.QTSP.Issue(b, key.Public(), testpki.Leaf{Subject: pkix.Name{CommonName: "direct"}, ExtUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	roots := x509.NewCertPool()
	roots.AddCert(bank.CA.Cert)
	direct := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16,
		TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key}}}}}
	get := func(path string) func() {
		return func() {
			resp, err := direct.Get(bank.URL + path)
			if err != nil {
				b.Fatal(err)
			}
			io.ReadAll(resp.Body)
			resp.Body.Close()
		}
	}
	for _, v := range []struct{ name, path string }{{"instant", "/echo/load"}, {"20ms", "/slow?for=20ms"}} {
		load(8, 64, call(v.path)) // warm both connection pools
		load(8, 64, get(v.path))
		const rounds, perRound = 5, 200
		var viaT, directT time.Duration
		var lat []time.Duration
		for range b.N {
			for range rounds {
				d, l := load(8, perRound, call(v.path))
				viaT, lat = viaT+d, append(lat, l...)
				d, _ = load(8, perRound, get(v.path))
				directT += d
			}
		}
		n := float64(b.N * rounds * perRound)
		b.ReportMetric(n/viaT.Seconds(), v.name+"-brokerd-req/s")
		b.ReportMetric(n/directT.Seconds(), v.name+"-direct-req/s")
		b.ReportMetric(directT.Seconds()/viaT.Seconds(), v.name+"-c8/direct")
		reportLatency(b, v.name+"-c8", lat)
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(full1-full0), "full-handshakes/1000-calls")
	b.ReportMetric(float64(resumed1), "resumed/1000-calls")
}

// BenchmarkSignAudit: /sign at concurrency 16 with the audit log (every
// answer waits for its record's fsync; concurrent records share commits)
// against the same API without it, in alternating rounds (goal: >= 0.9);
// and at concurrency 1, where each request pays a commit of its own.
func BenchmarkSignAudit(b *testing.B) {
	s := newStack(b, stackOptions{})
	ctx := context.Background()
	if _, _, err := s.keys.Create(ctx, "ec.key", tpm.P256, keys.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	for _, key := range []string{"rsa.key", "ec.key"} {
		load(16, 64, func() { s.signAt(b, s.url, key) })
		load(16, 64, func() { s.signAt(b, s.noAudit, key) })
		// One client: every request waits for a commit of its own.
		var on1, off1 time.Duration
		for range b.N * 5 {
			d, _ := load(1, 40, func() { s.signAt(b, s.url, key) })
			on1 += d
			d, _ = load(1, 40, func() { s.signAt(b, s.noAudit, key) })
			off1 += d
		}
		b.ReportMetric(off1.Seconds()/on1.Seconds(), key+"-c1-audit/noaudit")
		const rounds, perRound = 5, 240
		var on, off time.Duration
		seq0, _ := s.log.Head()
		for range b.N {
			for range rounds {
				d, _ := load(16, perRound, func() { s.signAt(b, s.url, key) })
				on += d
				d, _ = load(16, perRound, func() { s.signAt(b, s.noAudit, key) })
				off += d
			}
		}
		seq1, _ := s.log.Head()
		n := float64(b.N * rounds * perRound)
		if float64(seq1-seq0) < n {
			b.Fatalf("%v audited requests made %d records", n, seq1-seq0)
		}
		b.ReportMetric(n/on.Seconds(), key+"-audit-sign/s")
		b.ReportMetric(n/off.Seconds(), key+"-noaudit-sign/s")
		b.ReportMetric(off.Seconds()/on.Seconds(), key+"-audit/noaudit")
	}
	b.ReportMetric(0, "ns/op")
}
