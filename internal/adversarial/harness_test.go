package adversarial_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/brokerd/brokerd/config"
	"github.com/brokerd/brokerd/daemon"
	"github.com/brokerd/brokerd/internal/mockbank"
	"github.com/brokerd/brokerd/internal/swtpmtest"
	"github.com/brokerd/brokerd/internal/testpki"
	"github.com/brokerd/brokerd/internal/tpmproxy"
	"github.com/brokerd/brokerd/keys"
	"github.com/brokerd/brokerd/netstack/bank"
	"github.com/brokerd/brokerd/policy"
	"github.com/brokerd/brokerd/tpm"
)

// appliance is a brokerd under attack.
type appliance struct {
	t      testing.TB
	dir    string
	cfg    *config.Config
	d      *daemon.Daemon
	api    string // https://127.0.0.1:PORT
	health string // http://127.0.0.1:PORT
	sw     *swtpmtest.TPM
	proxy  *tpmproxy.Proxy
	ca     *testpki.CA // issues client certificates and the server's
	bank   *mockbank.Bank
	// names resolves bank names for the bank client (injected): what an
	// attacker's DNS would say; every address is then dialled on loopback
	// only if it is loopback, and fails the test otherwise.
	names map[string]string
	logs  *syncBuffer
	// profile is the slow-TPM profile the daemon's TPM runs at
	// (BROKERD_TPM_PROFILE), nil for swtpm's own speed.
	profile *tpmproxy.Profile
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) Len() int { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Len() }

// options change a test's appliance.
type options struct {
	config func(*config.Config)
	// delay holds the TPM's answers to a command code (tpmproxy).
	delay func(cc uint32) time.Duration
}

// start initialises and runs an appliance: server and client
// certificates from a test CA, keys qwac.key (P-256, a QWAC of the bank's
// QTSP), any.key (P-256, no certificate), qseal.key (RSA-2048, an eseal
// certificate), and rules for agg-1 and agg-2.
func start(t testing.TB, o options) *appliance {
	t.Helper()
	a := &appliance{t: t, dir: t.TempDir(), sw: swtpmtest.Start(t), ca: testpki.NewCA(t, "Client CA"),
		bank: mockbank.Start(t, mockbank.Options{}), names: map[string]string{}, logs: &syncBuffer{}}
	profile, err := tpmproxy.FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	var slow atomic.Pointer[tpmproxy.Profile] // set once the keys are made
	delay := func(cc uint32) time.Duration {
		var d time.Duration
		if o.delay != nil {
			d = o.delay(cc)
		}
		if p := slow.Load(); p != nil {
			d += p.Delay(cc)
		}
		return d
	}
	if a.proxy, err = tpmproxy.Start(a.dir, a.sw.Socket(), tpmproxy.Options{Delay: delay}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.proxy.Close() })
	a.initialise(o)
	if _, err := bank.AddTrust(a.cfg.Bank.TrustDir, []*x509.Certificate{a.bank.CA.Cert}, ""); err != nil {
		t.Fatal(err)
	}
	a.addKeys()
	a.addPolicy()
	// With BROKERD_TPM_PROFILE set, the keys are made at swtpm's speed
	// (an RSA key generation on a chip takes seconds to minutes) and the
	// daemon runs at the profile's, from its start on.
	a.profile = profile
	slow.Store(profile)
	a.run()
	return a
}

func (a *appliance) initialise(o options) {
	t := a.t
	serverCert, serverKey := a.ca.IssueKey(t, testpki.Leaf{Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"},
		IPs: []net.IP{net.ParseIP("127.0.0.1")}, ExtUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	cfg := config.Default()
	cfg.TPM.Address = "swtpm:" + a.proxy.Socket()
	cfg.StateDir = filepath.Join(a.dir, "state")
	cfg.API.Listen, cfg.Health.Listen = []string{"127.0.0.1:0"}, []string{"127.0.0.1:0"}
	cfg.Admin.Socket = filepath.Join(a.dir, "admin.sock")
	cfg.Audit.MinFree = 1 << 20
	if o.config != nil {
		o.config(cfg)
	}
	path := filepath.Join(a.dir, "etc", "brokerd.toml")
	if _, err := daemon.Init(context.Background(), path, cfg, &daemon.TLSFiles{Chain: []*x509.Certificate{serverCert},
		Key: serverKey, ClientCAs: []*x509.Certificate{a.ca.Cert}}, nil); err != nil {
		t.Fatal(err)
	}
	var err error
	if a.cfg, err = config.Load(path); err != nil {
		t.Fatal(err)
	}
}

func (a *appliance) addKeys() {
	t, ctx := a.t, context.Background()
	s, err := daemon.OpenState(a.cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, k := range []struct {
		id   string
		alg  tpm.Algorithm
		leaf func(*x509.CertificateRequest) *x509.Certificate
	}{
		{"qwac.key", tpm.P256, func(csr *x509.CertificateRequest) *x509.Certificate {
			return a.bank.QTSP.Issue(t, csr.PublicKey, testpki.Leaf{Subject: csr.Subject, ExtUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		}},
		{"any.key", tpm.P256, nil},
		{"qseal.key", tpm.RSA2048, func(csr *x509.CertificateRequest) *x509.Certificate {
			return a.ca.Issue(t, csr.PublicKey, testpki.Leaf{Subject: csr.Subject, Extra: []pkix.Extension{testpki.QcTypeStatements(t, "eseal")}})
		}},
	} {
		_, der, err := s.Keys.Create(ctx, k.id, k.alg, keys.CreateOptions{CSR: &x509.CertificateRequest{Subject: pkix.Name{CommonName: k.id}}})
		if err != nil {
			t.Fatal(err)
		}
		if k.leaf != nil {
			csr, _ := x509.ParseCertificateRequest(der)
			if _, err := s.Keys.AttachCert(k.id, []*x509.Certificate{k.leaf(csr)}, []string{strings.TrimSuffix(k.id, ".key") + ".crt"}); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func (a *appliance) addPolicy() {
	p := &policy.Policy{}
	for _, r := range []policy.Rule{
		// Both clients call the bank through one rule: their calls share
		// a pool of connections.
		{Name: "bank", AnyClient: true, Keys: []string{"qwac.key"}, Ops: []string{"makeRequest"}, Origins: []string{a.bank.URL}, AllowPrivate: true},
		{Name: "agg-1-sign", CN: "agg-1", Keys: []string{"*"}, Ops: []string{"sign"}},
		{Name: "agg-2-sign", CN: "agg-2", Keys: []string{"*"}, Ops: []string{"sign"}},
		{Name: "agg-2-public", CN: "agg-2", Keys: []string{"*"}, Ops: []string{"makeRequest"}, Origins: []string{"*"}},
	} {
		if err := p.Put(r); err != nil {
			a.t.Fatal(err)
		}
	}
	if err := p.Save(a.cfg.Policy.File); err != nil {
		a.t.Fatal(err)
	}
}

// run starts the daemon and waits until it serves.
func (a *appliance) run() {
	t := a.t
	ready := make(chan []string, 1)
	deps := daemon.Deps{Version: "adversarial", Notify: func(string) error { return nil }, WatchInterval: 50 * time.Millisecond,
		Ready: func(addrs []string) { ready <- addrs }, Bank: a.bankNet,
		Log: slogTo(a.logs)}
	d, err := daemon.New(context.Background(), a.cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	a.d = d
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("daemon: %v", err)
		}
	})
	select {
	case addrs := <-ready:
		a.api = "https://" + addrs[0]
		a.health = "http://" + d.HealthAddrs()[0]
	case err := <-done:
		t.Fatalf("the daemon stopped before it served: %v", err)
	}
}

// bankNet injects the resolver and the dialer of the bank client.
func (a *appliance) bankNet(c *bank.Config) {
	c.Resolve = func(_ context.Context, host string) ([]net.IP, error) {
		if ip, ok := a.names[host]; ok {
			return []net.IP{net.ParseIP(ip)}, nil
		}
		return nil, fmt.Errorf("no such host %s", host)
	}
	c.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if host, _, _ := net.SplitHostPort(addr); host != "127.0.0.1" {
			a.t.Errorf("brokerd dialled %s", addr)
			return nil, errors.New("refused by the test")
		}
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
}

// client is an HTTP client with a certificate for cn ("" for none: the
// uncertified host) that keeps its connections alive.
func (a *appliance) client(cn string) *http.Client {
	pool := x509.NewCertPool()
	pool.AddCert(a.ca.Cert)
	cfg := &tls.Config{RootCAs: pool, ServerName: "localhost", ClientSessionCache: tls.NewLRUClientSessionCache(16)}
	if cn != "" {
		cert, key := a.ca.IssueKey(a.t, testpki.Leaf{Subject: pkix.Name{CommonName: cn}, ExtUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		cfg.Certificates = []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}}
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, MaxIdleConnsPerHost: 64}}
}

// post sends a JSON body and returns the status and the body.
func post(t testing.TB, c *http.Client, url, body string) (int, string) {
	t.Helper()
	resp, err := c.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(out)
}
