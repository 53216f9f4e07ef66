package listener_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
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
	"testing"
	"time"

	"github.com/brokerd/brokerd/internal/testpki"
	"github.com/brokerd/brokerd/netstack/listener"
)

type files struct {
	dir, cert, ca string
	key           *ecdsa.PrivateKey
	caCert        *testpki.CA
}

func material(t *testing.T, cn string) files {
	t.Helper()
	dir := t.TempDir()
	ca := testpki.NewCA(t, "CA "+cn)
	cert, key := ca.IssueKey(t, testpki.Leaf{Subject: pkix.Name{CommonName: cn}, DNSNames: []string{"localhost"}})
	return files{dir: dir, key: key, caCert: ca,
		cert: testpki.WriteFile(t, filepath.Join(dir, "server.crt"), testpki.CertPEM(cert)),
		ca:   testpki.WriteFile(t, filepath.Join(dir, "ca.crt"), testpki.CertPEM(ca.Cert))}
}

func TestLoadMaterial(t *testing.T) {
	t.Parallel()
	f := material(t, "a")
	m, err := listener.LoadMaterial(f.cert, f.ca, f.key)
	if err != nil {
		t.Fatal(err)
	}
	if m.Cert.Leaf.Subject.CommonName != "a" || len(m.CAs) != 1 {
		t.Fatalf("material %+v", m)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if _, err := listener.LoadMaterial(f.cert, f.ca, other); err == nil || !strings.Contains(err.Error(), "not the server key") {
		t.Fatalf("mismatched key: %v", err)
	}
	if _, err := listener.LoadMaterial(f.cert, f.cert+".missing", f.key); err == nil {
		t.Fatal("missing CA file accepted")
	}
	if _, err := listener.LoadMaterial(testpki.WriteFile(t, filepath.Join(f.dir, "empty"), nil), f.ca, f.key); err == nil {
		t.Fatal("empty certificate file accepted")
	}
}

func TestFailedReloadKeepsMaterial(t *testing.T) {
	t.Parallel()
	good := material(t, "first")
	load := func() (*listener.Material, error) { return listener.LoadMaterial(good.cert, good.ca, good.key) }
	calls := 0
	srv, err := listener.NewServer(listener.Config{}, func() (*listener.Material, error) {
		calls++
		if calls > 1 {
			return nil, errors.New("broken file")
		}
		return load()
	}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if listener.VerifiedChain(r) == nil {
			io.WriteString(w, "anonymous")
			return
		}
		io.WriteString(w, "verified")
	}), nil)
	if err != nil {
		t.Fatal(err)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	srv.ServeAPI(l)
	defer srv.Shutdown(context.Background())
	if err := srv.Reload(); err == nil {
		t.Fatal("a failing reload reported success")
	}
	pool := x509.NewCertPool()
	pool.AddCert(good.caCert.Cert)
	clientCert, clientKey := good.caCert.IssueKey(t, testpki.Leaf{Subject: pkix.Name{CommonName: "c"}, ExtUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	for _, tc := range []struct {
		certs []tls.Certificate
		want  string
	}{{nil, "anonymous"}, {[]tls.Certificate{{Certificate: [][]byte{clientCert.Raw}, PrivateKey: clientKey}}, "verified"}} {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost", Certificates: tc.certs}}}
		resp, err := c.Get("https://" + l.Addr().String() + "/")
		if err != nil {
			t.Fatalf("after a failed reload: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != tc.want || resp.TLS.PeerCertificates[0].Subject.CommonName != "first" {
			t.Fatalf("got %q from %s", body, resp.TLS.PeerCertificates[0].Subject)
		}
	}
}

func TestListen(t *testing.T) {
	t.Parallel()
	if _, err := listener.Listen(nil, nil); err == nil || !strings.Contains(err.Error(), "no API listener") {
		t.Fatalf("no listener: %v", err)
	}
	if _, err := listener.Listen([]string{"256.0.0.1:1"}, nil); err == nil {
		t.Fatal("bad address accepted")
	}
	ls, err := listener.Listen([]string{"127.0.0.1:0"}, []string{"127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	if len(ls.API) != 1 || len(ls.Health) != 1 {
		t.Fatalf("listeners %+v", ls)
	}
}

// verifyingServer is a server that records the client certificates it
// refuses and refuses the clients named in revoked.
type verifyingServer struct {
	t       *testing.T
	f       files
	url     string
	pool    *x509.CertPool
	mu      sync.Mutex
	refused []string
	revoked map[string]bool
}

func newVerifyingServer(t *testing.T) *verifyingServer {
	t.Helper()
	v := &verifyingServer{t: t, f: material(t, "localhost"), revoked: map[string]bool{}, pool: x509.NewCertPool()}
	v.pool.AddCert(v.f.caCert.Cert)
	cfg := listener.Config{
		CheckClient: func(chain []*x509.Certificate) error {
			v.mu.Lock()
			defer v.mu.Unlock()
			if v.revoked[chain[0].Subject.CommonName] {
				return errors.New("client certificate revoked")
			}
			return nil
		},
		OnRefused: func(remote string, presented []*x509.Certificate, reason error) {
			v.mu.Lock()
			defer v.mu.Unlock()
			v.refused = append(v.refused, remote+" "+presented[0].Subject.CommonName+": "+reason.Error())
		},
	}
	srv, err := listener.NewServer(cfg, func() (*listener.Material, error) { return listener.LoadMaterial(v.f.cert, v.f.ca, v.f.key) },
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			chain := listener.VerifiedChain(r)
			if chain == nil {
				io.WriteString(w, "anonymous")
				return
			}
			io.WriteString(w, chain[0].Subject.CommonName+" via "+chain[len(chain)-1].Subject.CommonName)
		}), nil)
	if err != nil {
		t.Fatal(err)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	srv.ServeAPI(l)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	v.url = "https://" + l.Addr().String() + "/"
	return v
}

// leaf is a client certificate of ca for cn (client usage unless l says).
func (v *verifyingServer) leaf(ca *testpki.CA, cn string, l testpki.Leaf) []tls.Certificate {
	l.Subject = pkix.Name{CommonName: cn}
	if l.ExtUsage == nil {
		l.ExtUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	cert, key := ca.IssueKey(v.t, l)
	return []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key}}
}

func (v *verifyingServer) client(certs []tls.Certificate) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: v.pool, ServerName: "localhost",
		// Sent whatever CAs the server names: Go's client would keep
		// quiet about a certificate of a CA the server does not list.
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if len(certs) == 0 {
				return &tls.Certificate{}, nil
			}
			return &certs[0], nil
		},
		ClientSessionCache: tls.NewLRUClientSessionCache(4)}}}
}

func (v *verifyingServer) get(c *http.Client) (string, error) {
	resp, err := c.Get(v.url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body), nil
}

// takeRefused returns the refusals recorded since the last call.
func (v *verifyingServer) takeRefused() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	r := v.refused
	v.refused = nil
	return r
}

func (v *verifyingServer) revoke(cn string, revoked bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.revoked[cn] = revoked
}

// TestClientVerification: the server verifies client chains itself, so it
// can tell whose certificate it refused; every refusal fails the handshake
// and is reported.
func TestClientVerification(t *testing.T) {
	t.Parallel()
	v := newVerifyingServer(t)
	ca, rogue := v.f.caCert, testpki.NewCA(t, "Rogue CA")
	for _, tc := range []struct {
		name, want, refusal string
		certs               []tls.Certificate
	}{
		{"no certificate", "anonymous", "", nil},
		{"valid", "alice via CA localhost", "", v.leaf(ca, "alice", testpki.Leaf{})},
		{"other CA", "", "127.0.0.1 mallory: client certificate: x509: certificate signed by unknown authority", v.leaf(rogue, "mallory", testpki.Leaf{})},
		{"expired", "", "127.0.0.1 old: client certificate: x509: certificate has expired", v.leaf(ca, "old", testpki.Leaf{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})},
		{"server usage only", "", "127.0.0.1 srv: client certificate: x509: certificate specifies an incompatible key usage", v.leaf(ca, "srv", testpki.Leaf{ExtUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v.takeRefused()
			got, err := v.get(v.client(tc.certs))
			refused := v.takeRefused()
			if tc.refusal == "" {
				if err != nil || got != tc.want || len(refused) != 0 {
					t.Fatalf("got %q, %v, refused %q", got, err, refused)
				}
				return
			}
			if err == nil {
				t.Fatalf("the handshake succeeded: %q", got)
			}
			if len(refused) != 1 || !strings.HasPrefix(refused[0], tc.refusal) {
				t.Fatalf("refusals %q, want one starting %q", refused, tc.refusal)
			}
		})
	}
}

// TestResumptionChecksTheClient: a resumed session carries the verified
// chain, and CheckClient runs on resumed handshakes too: a client revoked
// after its first handshake cannot resume.
func TestResumptionChecksTheClient(t *testing.T) {
	t.Parallel()
	v := newVerifyingServer(t)
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		bob := v.client(v.leaf(v.f.caCert, "bob", testpki.Leaf{}))
		tr := bob.Transport.(*http.Transport)
		tr.TLSClientConfig.MaxVersion = version
		tr.DisableKeepAlives = true // every request is a new handshake
		var resumed []bool
		tr.TLSClientConfig.VerifyConnection = func(cs tls.ConnectionState) error {
			resumed = append(resumed, cs.DidResume)
			return nil
		}
		for range 2 {
			if got, err := v.get(bob); err != nil || got != "bob via CA localhost" {
				t.Fatalf("TLS %x: %q %v", version, got, err)
			}
		}
		if len(resumed) != 2 || resumed[0] || !resumed[1] {
			t.Fatalf("TLS %x: resumption %v, want [false true]", version, resumed)
		}
		v.revoke("bob", true)
		v.takeRefused()
		if got, err := v.get(bob); err == nil {
			t.Fatalf("TLS %x: a revoked client resumed: %q", version, got)
		}
		if refused := v.takeRefused(); len(refused) != 1 || refused[0] != "127.0.0.1 bob: client certificate revoked" {
			t.Fatalf("TLS %x: refusals %q", version, refused)
		}
		v.revoke("bob", false)
	}
}

// TestCloseClients: the idle connections of refused clients are closed;
// others stay open.
func TestCloseClients(t *testing.T) {
	t.Parallel()
	f := material(t, "localhost")
	var conns atomic.Int32
	srv, err := listener.NewServer(listener.Config{}, func() (*listener.Material, error) { return listener.LoadMaterial(f.cert, f.ca, f.key) },
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }), nil)
	if err != nil {
		t.Fatal(err)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	counting := &countingListener{Listener: l, n: &conns}
	srv.ServeAPI(counting)
	defer srv.Shutdown(context.Background())
	pool := x509.NewCertPool()
	pool.AddCert(f.caCert.Cert)
	clientOf := func(cn string) *http.Client {
		cert, key := f.caCert.IssueKey(t, testpki.Leaf{Subject: pkix.Name{CommonName: cn}, ExtUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost",
			Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key}}}}}
	}
	get := func(c *http.Client) {
		t.Helper()
		resp, err := c.Get("https://" + l.Addr().String() + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	mallory, alice := clientOf("mallory"), clientOf("alice")
	get(mallory)
	get(alice)
	// CloseClients asks refuse about idle connections only, and a
	// connection turns idle on the server just after its client has the
	// answer, with nothing to tell the client when: call it until it has
	// closed mallory's and seen alice's idle.
	closed, aliceIdle := 0, false
	eventually(t, func() bool {
		closed += srv.CloseClients(func(chain []*x509.Certificate) bool {
			cn := chain[0].Subject.CommonName
			aliceIdle = aliceIdle || cn == "alice"
			return cn == "mallory"
		})
		return closed >= 1 && aliceIdle
	})
	if closed != 1 {
		t.Fatalf("closed %d connections, want 1", closed)
	}
	before := conns.Load()
	get(alice) // the same connection
	if conns.Load() != before {
		t.Fatal("alice's connection was closed")
	}
	get(mallory) // a new one
	if conns.Load() != before+1 {
		t.Fatal("mallory's connection stayed open")
	}
}

type countingListener struct {
	net.Listener
	n *atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// eventually polls cond until it holds, for conditions nothing signals;
// it fails the test after 10 s.
func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(time.Millisecond) // a poll with the deadline above, not an ordering
	}
}
