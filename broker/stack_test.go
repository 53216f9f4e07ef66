package broker_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/brokerd/brokerd/audit"
	"github.com/brokerd/brokerd/broker"
	"github.com/brokerd/brokerd/internal/mockbank"
	"github.com/brokerd/brokerd/internal/swtpmtest"
	"github.com/brokerd/brokerd/internal/testpki"
	"github.com/brokerd/brokerd/keys"
	"github.com/brokerd/brokerd/netstack/bank"
	"github.com/brokerd/brokerd/netstack/listener"
	"github.com/brokerd/brokerd/policy"
	"github.com/brokerd/brokerd/store"
	"github.com/brokerd/brokerd/tpm"
)

// stack is brokerd assembled in-process on a real swtpm: TPM device, state
// file, key registry, policy, bank client, API and the mutual-TLS listener
// on loopback.
type stack struct {
	sw      *swtpmtest.TPM
	dev     *tpm.Device
	keys    *keys.Manager
	url     string // audited
	noAudit string // the same API without audit, for benchmarks
	client  *http.Client
	sealed  *rsa.PrivateKey
	ca      *testpki.CA // issues client certificates
	bank    *mockbank.Bank
	out     *bank.Client
	trust   *bank.TrustStore
	// trustReloads tells every reload of the watched trust store.
	trustReloads chan error
	trustDir     string
	dir          string
	st           *store.Store
	log          *audit.Log
	serve        func(broker.Config) string // another API on the same stack
}

type stackOptions struct {
	bank     *mockbank.Bank // QWACs certified by its QTSP; its CA trusted unless untrusted
	untrust  bool           // do not trust the bank's CA
	outbound bank.Config    // Resolve/Dial default to the guarded fakes below
	rules    []policy.Rule  // added to the rule for the client "bench"
}

// resolver answers for test names only: bank.test is loopback, evil.test
// private, meta.test link-local.
func resolver(_ context.Context, host string) ([]net.IP, error) {
	ips := map[string]string{"localhost": "127.0.0.1", "bank.test": "127.0.0.1", "evil.test": "10.1.2.3", "meta.test": "169.254.169.254"}
	if ip, ok := ips[host]; ok {
		return []net.IP{net.ParseIP(ip)}, nil
	}
	return nil, fmt.Errorf("no such host %s", host)
}

// loopbackDialer connects to 127.0.0.1 only and fails the test if brokerd
// ever asks for another address: the guard must refuse those first.
func loopbackDialer(tb testing.TB) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, _ := net.SplitHostPort(addr)
		if host != "127.0.0.1" {
			tb.Errorf("brokerd tried to connect to %s", addr)
			return nil, fmt.Errorf("test dialer: %s refused", addr)
		}
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
}

// newStack assembles the stack on a fresh swtpm.
func newStack(tb testing.TB, opts stackOptions) *stack {
	tb.Helper()
	ctx := context.Background()
	s := openStack(tb)
	s.bank = opts.bank
	s.addKeys(tb, ctx)
	if opts.bank != nil {
		s.addQWACs(tb, ctx, opts.bank)
	}
	certFile, caFile := s.serverMaterial(tb, ctx)
	pol := s.policyEngine(tb, opts.rules)
	s.bankClient(tb, opts)
	s.serve = func(cfg broker.Config) string {
		api := broker.New(cfg, s.keys, pol, s.out)
		srv, err := listener.NewServer(listener.Config{}, func() (*listener.Material, error) {
			key, err := s.keys.Signer(ctx, "brokerd:tls-server")
			if err != nil {
				return nil, err
			}
			return listener.LoadMaterial(certFile, caFile, key)
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
		return "https://" + l.Addr().String()
	}
	s.url, s.noAudit = s.serve(broker.Config{Audit: s.log}), s.serve(broker.Config{})
	s.client = s.clientFor(tb, "bench")
	return s
}

// openStack starts a swtpm and opens the device, the state file, its
// audit log and the key registry.
func openStack(tb testing.TB) *stack {
	tb.Helper()
	s := &stack{sw: swtpmtest.Start(tb), dir: tb.TempDir()}
	var err error
	if s.dev, err = tpm.Open(tpm.Config{Address: s.sw.Address()}, nil); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.dev.Close() })
	if s.st, err = store.Open(filepath.Join(s.dir, store.FileName), store.Options{}); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.st.Close() })
	if s.log, err = audit.Open(s.st); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.log.Close)
	if s.keys, err = keys.Open(s.dev, s.st, keys.Options{}); err != nil {
		tb.Fatal(err)
	}
	return s
}

// rsaKeys are RSA-2048 keys for import, made once per test binary: the
// TPM takes a few hundred milliseconds to make one, its import a few, and
// what the API does with a key does not depend on where it was made
// (package keys tests both). Every stack has a TPM of its own.
var rsaKeys = sync.OnceValues(func() ([2]*rsa.PrivateKey, error) {
	var ks [2]*rsa.PrivateKey
	for i := range ks {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return ks, err
		}
		ks[i] = k
	}
	return ks, nil
})

// rsaKey is the i-th of rsaKeys.
func rsaKey(tb testing.TB, i int) *rsa.PrivateKey {
	tb.Helper()
	ks, err := rsaKeys()
	if err != nil {
		tb.Fatal(err)
	}
	return ks[i]
}

// addKeys imports an RSA-2048 key as rsa.key and the reference RSA-4096
// key as sealed.key.
func (s *stack) addKeys(tb testing.TB, ctx context.Context) {
	tb.Helper()
	if _, err := s.keys.Import(ctx, "rsa.key", rsaKey(tb, 0), keys.ImportOptions{}); err != nil {
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
}

// addQWACs imports QWACs (RSA and P-256) certified by the bank's QTSP.
func (s *stack) addQWACs(tb testing.TB, ctx context.Context, b *mockbank.Bank) {
	tb.Helper()
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	for id, priv := range map[string]crypto.Signer{"qwac.key": rsaKey(tb, 1), "qwac-ec.key": ec} {
		cert := b.QTSP.Issue(tb, priv.Public(), testpki.Leaf{Subject: pkix.Name{CommonName: id}, ExtUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		alias := strings.TrimSuffix(id, ".key") + ".crt"
		if _, err := s.keys.Import(ctx, id, priv, keys.ImportOptions{Chain: []*x509.Certificate{cert, b.QTSP.Cert}, Aliases: []string{alias}}); err != nil {
			tb.Fatal(err)
		}
	}
}

// serverMaterial makes the server key in the TPM, its certificate from a
// new client CA, and writes both certificate files.
func (s *stack) serverMaterial(tb testing.TB, ctx context.Context) (certFile, caFile string) {
	tb.Helper()
	s.ca = testpki.NewCA(tb, "Client CA")
	_, csrDER, err := s.keys.Create(ctx, "brokerd:tls-server", tpm.P256, keys.CreateOptions{Internal: true,
		CSR: &x509.CertificateRequest{Subject: pkix.Name{CommonName: "localhost"}}})
	if err != nil {
		tb.Fatal(err)
	}
	csr, _ := x509.ParseCertificateRequest(csrDER)
	server := s.ca.Issue(tb, csr.PublicKey, testpki.Leaf{Subject: csr.Subject, DNSNames: []string{"localhost"}, ExtUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	return testpki.WriteFile(tb, filepath.Join(s.dir, "server.crt"), testpki.CertPEM(server)),
		testpki.WriteFile(tb, filepath.Join(s.dir, "ca.crt"), testpki.CertPEM(s.ca.Cert))
}

// policyEngine writes a policy of the rule for the client "bench" and
// rules, and loads it.
func (s *stack) policyEngine(tb testing.TB, rules []policy.Rule) *policy.Engine {
	tb.Helper()
	p := &policy.Policy{}
	for _, r := range append([]policy.Rule{{Name: "bench", CN: "bench", Keys: []string{"*"}, Ops: []string{"sign"}}}, rules...) {
		if err := p.Put(r); err != nil {
			tb.Fatal(err)
		}
	}
	policyFile := filepath.Join(s.dir, "policy.toml")
	if err := p.Save(policyFile); err != nil {
		tb.Fatal(err)
	}
	pol, err := policy.NewEngine(policyFile, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return pol
}

// bankClient makes the bank client, its trust store watched (every
// reload is reported on s.trustReloads) and the bank's CA trusted unless
// opts say not.
func (s *stack) bankClient(tb testing.TB, opts stackOptions) {
	tb.Helper()
	s.trustDir = filepath.Join(s.dir, "bank-cas")
	if opts.bank != nil && !opts.untrust {
		if _, err := bank.AddTrust(s.trustDir, []*x509.Certificate{opts.bank.CA.Cert}, ""); err != nil {
			tb.Fatal(err)
		}
	}
	trust, err := bank.NewTrustStore(s.trustDir, nil)
	if err != nil {
		tb.Fatal(err)
	}
	s.trust = trust
	s.trustReloads = make(chan error, 16)
	wctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	go trust.Watch(wctx, 20*time.Millisecond, func(err error) {
		select {
		case s.trustReloads <- err:
		default: // nobody listens
		}
	})
	oc := opts.outbound
	if oc.Resolve == nil {
		oc.Resolve = resolver
	}
	if oc.Dial == nil {
		oc.Dial = loopbackDialer(tb)
	}
	s.out = bank.New(oc, trust)
}

// trustReloaded waits for trust reloads until cond holds of the CAs in
// force.
func (s *stack) trustReloaded(tb testing.TB, cond func([]bank.TrustedCA) bool) {
	tb.Helper()
	for !cond(s.trust.CAs()) {
		select {
		case err := <-s.trustReloads:
			if err != nil {
				tb.Fatalf("trust reload: %v", err)
			}
		case <-time.After(10 * time.Second):
			tb.Fatalf("no trust reload within 10s; in force: %+v", s.trust.CAs())
		}
	}
}

// clientFor returns an HTTP client with a certificate for cn.
func (s *stack) clientFor(tb testing.TB, cn string) *http.Client {
	cert, key := s.ca.IssueKey(tb, testpki.Leaf{Subject: pkix.Name{CommonName: cn}, ExtUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	pool := x509.NewCertPool()
	pool.AddCert(s.ca.Cert)
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, ServerName: "localhost", Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key}}},
		MaxIdleConnsPerHost: 64,
	}}
}

// post sends a JSON body and returns the status and body.
func post(tb testing.TB, c *http.Client, url, body string) (int, string) {
	tb.Helper()
	resp, err := c.Post(url, "application/json", bytes.NewBufferString(body))
	if err != nil {
		tb.Fatal(err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(out)
}
