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
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/brokerd/brokerd/broker"
	"github.com/brokerd/brokerd/internal/swtpmtest"
	"github.com/brokerd/brokerd/internal/testpki"
	"github.com/brokerd/brokerd/internal/tpmbench"
	"github.com/brokerd/brokerd/keys"
	"github.com/brokerd/brokerd/netstack"
	"github.com/brokerd/brokerd/policy"
	"github.com/brokerd/brokerd/store"
	"github.com/brokerd/brokerd/tpm"
)

// stack is brokerd assembled in-process on a real swtpm: TPM device, state
// file, key registry, policy, API and the mutual-TLS listener on loopback.
type stack struct {
	sw     *swtpmtest.TPM
	dev    *tpm.Device
	keys   *keys.Manager
	url    string
	client *http.Client
	sealed *rsa.PrivateKey
}

func newStack(tb testing.TB) *stack {
	tb.Helper()
	ctx := context.Background()
	s := &stack{sw: swtpmtest.Start(tb)}
	var err error
	if s.dev, err = tpm.Open(tpm.Config{Address: s.sw.Address()}, nil); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.dev.Close() })
	dir := tb.TempDir()
	st, err := store.Open(filepath.Join(dir, store.FileName), store.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	if s.keys, err = keys.Open(s.dev, st, keys.Options{}); err != nil {
		tb.Fatal(err)
	}
	if _, _, err := s.keys.Create(ctx, "rsa.key", tpm.RSA2048, keys.CreateOptions{}); err != nil {
		tb.Fatal(err)
	}
	pemData, err := os.ReadFile("../testdata/reference/example.key")
	if err != nil {
		tb.Fatal(err)
	}
	sealed, err := keys.ParsePrivateKeyPEM(pemData, nil)
	if err != nil {
		tb.Fatal(err)
	}
	s.sealed = sealed.(*rsa.PrivateKey)
	if _, err := s.keys.Import(ctx, "sealed.key", sealed, keys.ImportOptions{}); err != nil {
		tb.Fatal(err)
	}

	ca := testpki.NewCA(tb, "Bench CA")
	_, csrDER, err := s.keys.Create(ctx, "brokerd:tls-server", tpm.P256, keys.CreateOptions{Internal: true,
		CSR: &x509.CertificateRequest{Subject: pkix.Name{CommonName: "localhost"}}})
	if err != nil {
		tb.Fatal(err)
	}
	csr, _ := x509.ParseCertificateRequest(csrDER)
	server := ca.Issue(tb, csr.PublicKey, testpki.Leaf{Subject: csr.Subject, DNSNames: []string{"localhost"}, ExtUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	certFile := testpki.WriteFile(tb, filepath.Join(dir, "server.crt"), testpki.CertPEM(server))
	caFile := testpki.WriteFile(tb, filepath.Join(dir, "ca.crt"), testpki.CertPEM(ca.Cert))
	clientCert, clientKey := ca.IssueKey(tb, testpki.Leaf{Subject: pkix.Name{CommonName: "bench"}, ExtUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})

	p := &policy.Policy{}
	if err := p.Put(policy.Rule{Name: "bench", CN: "bench", Keys: []string{"*"}, Ops: []string{"sign"}}); err != nil {
		tb.Fatal(err)
	}
	policyFile := filepath.Join(dir, "policy.toml")
	if err := p.Save(policyFile); err != nil {
		tb.Fatal(err)
	}
	pol, err := policy.NewEngine(policyFile, nil)
	if err != nil {
		tb.Fatal(err)
	}
	api := broker.New(broker.Config{}, s.keys, pol)
	srv, err := netstack.NewServer(netstack.ServerConfig{}, func() (*netstack.Material, error) {
		key, err := s.keys.Signer(ctx, "brokerd:tls-server")
		if err != nil {
			return nil, err
		}
		return netstack.LoadMaterial(certFile, caFile, key)
	}, api.Handler(), nil)
	if err != nil {
		tb.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv.ServeAPI(l)
	tb.Cleanup(func() { srv.Shutdown(context.Background()) })
	s.url = "https://" + l.Addr().String()
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	s.client = &http.Client{Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, ServerName: "localhost", Certificates: []tls.Certificate{{Certificate: [][]byte{clientCert.Raw}, PrivateKey: clientKey}}},
		MaxIdleConnsPerHost: 64,
	}}
	return s
}

// sign posts one /sign request and fails on anything but 200.
func (s *stack) sign(tb testing.TB, key string) {
	body := fmt.Sprintf(`{"params":{"data":"bench payload","key_id":%q}}`, key)
	resp, err := s.client.Post(s.url+"/sign", "application/json", bytes.NewBufferString(body))
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
	s := newStack(b)
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
	s := newStack(b)
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
