package listener_test

import (
	"bufio"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/brokerd/brokerd/internal/testpki"
	"github.com/brokerd/brokerd/netstack/listener"
)

// admServer is a Server on 127.0.0.1 with real certificates, whose server
// key counts its signatures, and whose admission decisions wake waitFor.
type admServer struct {
	t           *testing.T
	srv         *listener.Server
	api, health string
	ca          *testpki.CA
	pool        *x509.CertPool
	signs       atomic.Int64
	mu          sync.Mutex
	changed     chan struct{}
}

// countingSigner counts the signatures of the server key: each is a TPM
// command in the daemon.
type countingSigner struct {
	*ecdsa.PrivateKey
	n *atomic.Int64
}

func (s countingSigner) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	s.n.Add(1)
	return s.PrivateKey.Sign(rand, digest, opts)
}

func startAdm(t *testing.T, cfg listener.Config) *admServer {
	t.Helper()
	dir := t.TempDir()
	ca := testpki.NewCA(t, "CA admission")
	cert, key := ca.IssueKey(t, testpki.Leaf{Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"}})
	certFile := testpki.WriteFile(t, filepath.Join(dir, "server.crt"), testpki.CertPEM(cert))
	caFile := testpki.WriteFile(t, filepath.Join(dir, "ca.crt"), testpki.CertPEM(ca.Cert))
	a := &admServer{t: t, ca: ca, pool: x509.NewCertPool(), changed: make(chan struct{})}
	a.pool.AddCert(ca.Cert)
	if cfg.ReadHeaderTimeout == 0 {
		// Raw connections in these tests wait for their turn without a
		// ClientHello: no handshake timeout in the way.
		cfg.ReadHeaderTimeout = time.Hour
	}
	srv, err := listener.NewServer(cfg, func() (*listener.Material, error) {
		return listener.LoadMaterial(certFile, caFile, countingSigner{key, &a.signs})
	}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if chain := listener.VerifiedChain(r); chain != nil {
			io.WriteString(w, chain[0].Subject.CommonName)
			return
		}
		io.WriteString(w, "anonymous")
	}), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "healthy") }))
	if err != nil {
		t.Fatal(err)
	}
	listener.SetAdmissionHook(srv, func(string, string) {
		a.mu.Lock()
		close(a.changed)
		a.changed = make(chan struct{})
		a.mu.Unlock()
	})
	a.srv = srv
	api, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	health, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a.api, a.health = api.Addr().String(), health.Addr().String()
	srv.ServeAPI(api)
	if err := srv.ServeHealth(health); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return a
}

// waitFor returns once cond holds of the admission counters, woken by
// each admission decision; it fails the test after 20 s.
func (a *admServer) waitFor(what string, cond func(listener.AdmissionStats) bool) {
	a.t.Helper()
	deadline := time.NewTimer(20 * time.Second)
	defer deadline.Stop()
	for {
		a.mu.Lock()
		ch := a.changed
		a.mu.Unlock()
		st := a.srv.AdmissionStats()
		if cond(st) {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			a.t.Fatalf("waiting for %s: admission stats %+v", what, st)
		}
	}
}

// dial opens a TCP connection to addr from the local address src.
func dial(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// clientTLS trusts the test CA; certs are the client's certificate, if any.
func (a *admServer) clientTLS(certs ...tls.Certificate) *tls.Config {
	return &tls.Config{RootCAs: a.pool, ServerName: "localhost", Certificates: certs}
}

// clientCert issues a client certificate named cn.
func (a *admServer) clientCert(cn string) tls.Certificate {
	cert, key := a.ca.IssueKey(a.t, testpki.Leaf{Subject: pkix.Name{CommonName: cn}, ExtUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key}
}

// readCounter counts the bytes read through it.
type readCounter struct {
	net.Conn
	n atomic.Int64
}

func (c *readCounter) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// assertRefused connects from src to addr, sends a ClientHello, and
// checks that the server closed the connection without a byte of answer
// (the reset may come before the connection is even established).
func (a *admServer) assertRefused(src, addr string) {
	a.t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err == nil {
		defer c.Close()
		rc := &readCounter{Conn: c}
		c.SetDeadline(time.Now().Add(20 * time.Second)) // a guard, not an ordering
		err = tls.Client(rc, a.clientTLS()).Handshake()
		if n := rc.n.Load(); n != 0 {
			a.t.Fatalf("the server answered %d bytes on a connection over the cap", n)
		}
	}
	var ne net.Error
	switch {
	case err == nil:
		a.t.Fatal("a connection over the cap completed a handshake")
	case errors.As(err, &ne) && ne.Timeout():
		a.t.Fatalf("a connection over the cap was left open: %v", err)
	case !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE):
		a.t.Fatalf("a connection over the cap: %v, want it closed", err)
	}
}

// handshake completes a TLS handshake on c.
func (a *admServer) handshake(c net.Conn, certs ...tls.Certificate) *tls.Conn {
	a.t.Helper()
	tc := tls.Client(c, a.clientTLS(certs...))
	if err := tc.Handshake(); err != nil {
		a.t.Fatalf("handshake from %s: %v", c.LocalAddr(), err)
	}
	return tc
}

// TestConnCapPerIP: connections from one address beyond MaxConnsPerIP
// are closed at accept, before the server sends or signs anything;
// another address is not affected, and a place freed is free again.
func TestConnCapPerIP(t *testing.T) {
	t.Parallel()
	a := startAdm(t, listener.Config{MaxConns: 16, MaxConnsPerIP: 2})
	c1, c2 := dial(t, "127.0.0.1", a.api), dial(t, "127.0.0.1", a.api)
	a.waitFor("two connections", func(s listener.AdmissionStats) bool { return s.API.Accepted == 2 })
	a.assertRefused("127.0.0.1", a.api)
	st := a.srv.AdmissionStats().API
	if st.RefusedCapPerIP != 1 || st.RefusedCap != 0 || st.Open != 2 || st.Addrs != 1 || a.signs.Load() != 0 {
		t.Fatalf("after one refusal: %+v, %d signatures", st, a.signs.Load())
	}

	// Another address: admitted, and served.
	other := a.handshake(dial(t, "127.0.0.2", a.api))
	if n := a.signs.Load(); n != 1 {
		t.Fatalf("%d signatures, want 1", n)
	}

	// A place freed is free again.
	c1.Close()
	a.waitFor("a place freed", func(s listener.AdmissionStats) bool { return s.API.Open == 2 })
	c3 := a.handshake(dial(t, "127.0.0.1", a.api))
	a.handshake(c2)

	// The table forgets addresses without connections.
	for _, c := range []net.Conn{c2, c3, other} {
		c.Close()
	}
	a.waitFor("every connection closed", func(s listener.AdmissionStats) bool { return s.API.Open == 0 })
	if st := a.srv.AdmissionStats().API; st.Addrs != 0 || st.Accepted != 4 || st.RefusedCapPerIP != 1 {
		t.Fatalf("at the end: %+v", st)
	}
}

// TestConnCapTotal: beyond MaxConns open, any address is refused at
// accept; the health listener counts its connections apart, under the
// same caps.
func TestConnCapTotal(t *testing.T) {
	t.Parallel()
	a := startAdm(t, listener.Config{MaxConns: 3, MaxConnsPerIP: 2})
	c1 := dial(t, "127.0.0.1", a.api)
	dial(t, "127.0.0.1", a.api)
	dial(t, "127.0.0.2", a.api)
	a.waitFor("three connections", func(s listener.AdmissionStats) bool { return s.API.Accepted == 3 })
	a.assertRefused("127.0.0.3", a.api)
	if st := a.srv.AdmissionStats().API; st.RefusedCap != 1 || st.RefusedCapPerIP != 0 || st.Open != 3 {
		t.Fatalf("API: %+v", st)
	}

	// The health listener: its own count, the same caps.
	var health []net.Conn
	for _, src := range []string{"127.0.0.3", "127.0.0.3", "127.0.0.4"} {
		health = append(health, dial(t, src, a.health))
	}
	for _, c := range health {
		if _, err := io.WriteString(c, "GET /health HTTP/1.1\r\nHost: brokerd\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("health while the API is full: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "healthy" {
			t.Fatalf("health: %d %q", resp.StatusCode, body)
		}
	}
	a.assertRefused("127.0.0.5", a.health)
	if st := a.srv.AdmissionStats(); st.Health.RefusedCap != 1 || st.Health.Open != 3 || st.API.Open != 3 || st.API.RefusedCap != 1 {
		t.Fatalf("health: %+v", st)
	}

	// A place freed on the API is free for any address.
	c1.Close()
	a.waitFor("a place freed", func(s listener.AdmissionStats) bool { return s.API.Open == 2 })
	a.handshake(dial(t, "127.0.0.3", a.api))
}

// TestAdmissionDefaults: zero fields take the defaults; a prefix length
// outside 1 to 128 is refused.
func TestAdmissionDefaults(t *testing.T) {
	t.Parallel()
	d := listener.DefaultConfig()
	if d.MaxConns != 1024 || d.MaxConnsPerIP != 64 || d.IPv6PrefixLen != 64 {
		t.Fatalf("defaults %+v", d)
	}
	for _, bits := range []int{-1, 129} {
		_, err := listener.NewServer(listener.Config{IPv6PrefixLen: bits}, func() (*listener.Material, error) {
			return nil, errors.New("not reached")
		}, http.NotFoundHandler(), nil)
		if err == nil || !strings.Contains(err.Error(), "IPv6 prefix length") {
			t.Fatalf("prefix length %d: %v", bits, err)
		}
	}
}

// TestHTTP1Only: the API negotiates HTTP/1.1 with a client that offers
// HTTP/2 first, in ALPN and through net/http alike.
func TestHTTP1Only(t *testing.T) {
	t.Parallel()
	a := startAdm(t, listener.Config{})
	cfg := a.clientTLS(a.clientCert("alice"))
	cfg.NextProtos = []string{"h2", "http/1.1"}
	c := tls.Client(dial(t, "127.0.0.1", a.api), cfg)
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	if p := c.ConnectionState().NegotiatedProtocol; p != "http/1.1" {
		t.Fatalf("negotiated %q, want http/1.1", p)
	}
	tr := &http.Transport{TLSClientConfig: a.clientTLS(a.clientCert("alice")), ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("https://" + a.api + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 1 || string(body) != "alice" {
		t.Fatalf("%s %q, want HTTP/1.1 and alice", resp.Proto, body)
	}
}
