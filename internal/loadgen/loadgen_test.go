package loadgen_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/brokerd/brokerd/internal/testpki"
)

// countingSigner counts the server key's signatures: one per full
// handshake.
type countingSigner struct {
	*ecdsa.PrivateKey
	n *atomic.Int64
}

func (s countingSigner) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	s.n.Add(1)
	return s.PrivateKey.Sign(rand, digest, opts)
}

// server is an httptest server over TLS with real certificates. It
// verifies client certificates when given, counts its signatures, and
// records its new connections' source addresses.
type server struct {
	*httptest.Server
	ca    *testpki.CA
	pool  *x509.CertPool
	signs atomic.Int64

	mu      sync.Mutex
	sources []string
	changed chan struct{}
}

func newServer(t *testing.T, h http.Handler, useTLS bool, adjust ...func(*tls.Config)) *server {
	t.Helper()
	s := &server{ca: testpki.NewCA(t, "CA loadgen"), pool: x509.NewCertPool(), changed: make(chan struct{})}
	s.pool.AddCert(s.ca.Cert)
	s.Server = httptest.NewUnstartedServer(h)
	s.Config.ErrorLog = log.New(io.Discard, "", 0) // floods make handshake errors
	s.Config.ConnState = func(c net.Conn, st http.ConnState) {
		if st == http.StateNew {
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			s.mu.Lock()
			s.sources = append(s.sources, host)
			close(s.changed)
			s.changed = make(chan struct{})
			s.mu.Unlock()
		}
	}
	if useTLS {
		cert, key := s.ca.IssueKey(t, testpki.Leaf{Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"}})
		s.TLS = &tls.Config{ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: s.pool,
			Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: countingSigner{key, &s.signs}}}}
		for _, f := range adjust {
			f(s.TLS)
		}
		s.StartTLS()
	} else {
		s.Start()
	}
	t.Cleanup(s.Close)
	return s
}

// conns returns the sources of the server's connections once it has
// seen n, or false after 20 s.
func (s *server) conns(n int) ([]string, bool) {
	timer := time.NewTimer(20 * time.Second)
	defer timer.Stop()
	for {
		s.mu.Lock()
		ch, got := s.changed, append([]string(nil), s.sources...)
		s.mu.Unlock()
		if len(got) >= n {
			return got, true
		}
		select {
		case <-ch:
		case <-timer.C:
			return got, false
		}
	}
}

// waitConns is conns failing the test on time-out.
func (s *server) waitConns(t *testing.T, n int) []string {
	t.Helper()
	got, ok := s.conns(n)
	if !ok {
		t.Fatalf("the server saw %d connections, want %d", len(got), n)
	}
	return got
}

func (s *server) addr() string {
	return strings.TrimPrefix(strings.TrimPrefix(s.URL, "https://"), "http://")
}

// clientTLS trusts the server; cn, when set, names a client certificate.
func (s *server) clientTLS(t *testing.T, cn string) *tls.Config {
	cfg := &tls.Config{RootCAs: s.pool, ServerName: "localhost"}
	if cn != "" {
		cert, key := s.ca.IssueKey(t, testpki.Leaf{Subject: pkix.Name{CommonName: cn}, ExtUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		cfg.Certificates = []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key}}
	}
	return cfg
}

func all(xs []string, want string) bool {
	for _, x := range xs {
		if x != want {
			return false
		}
	}
	return len(xs) > 0
}
