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

// TestClientVerification: the server verifies client chains itself, so it
// can tell whose certificate it refused; every refusal fails the handshake
// and is reported, and CheckClient runs on resumed handshakes too.
func TestClientVerification(t *testing.T) {
	f := material(t, "localhost")
	var mu sync.Mutex
	var refused []string
	revoked := map[string]bool{}
	cfg := listener.Config{
		CheckClient: func(chain []*x509.Certificate) error {
			mu.Lock()
			defer mu.Unlock()
			if revoked[chain[0].Subject.CommonName] {
				return errors.New("client certificate revoked")
			}
			return nil
		},
		OnRefused: func(presented []*x509.Certificate, reason error) {
			mu.Lock()
			defer mu.Unlock()
			refused = append(refused, presented[0].Subject.CommonName+": "+reason.Error())
		},
	}
	srv, err := listener.NewServer(cfg, func() (*listener.Material, error) { return listener.LoadMaterial(f.cert, f.ca, f.key) },
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
	defer srv.Shutdown(context.Background())
	url := "https://" + l.Addr().String() + "/"

	pool := x509.NewCertPool()
	pool.AddCert(f.caCert.Cert)
	rogue := testpki.NewCA(t, "Rogue CA")
	clientAuth := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	leaf := func(ca *testpki.CA, cn string, l testpki.Leaf) []tls.Certificate {
		l.Subject = pkix.Name{CommonName: cn}
		if l.ExtUsage == nil {
			l.ExtUsage = clientAuth
		}
		cert, key := ca.IssueKey(t, l)
		return []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key}}
	}
	client := func(certs []tls.Certificate) *http.Client {
		return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost",
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
	get := func(c *http.Client) (string, error) {
		resp, err := c.Get(url)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body), nil
	}
	for _, tc := range []struct {
		name, want, refusal string
		certs               []tls.Certificate
	}{
		{"no certificate", "anonymous", "", nil},
		{"valid", "alice via CA localhost", "", leaf(f.caCert, "alice", testpki.Leaf{})},
		{"other CA", "", "mallory: client certificate: x509: certificate signed by unknown authority", leaf(rogue, "mallory", testpki.Leaf{})},
		{"expired", "", "old: client certificate: x509: certificate has expired", leaf(f.caCert, "old", testpki.Leaf{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})},
		{"server usage only", "", "srv: client certificate: x509: certificate specifies an incompatible key usage", leaf(f.caCert, "srv", testpki.Leaf{ExtUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			refused = nil
			mu.Unlock()
			got, err := get(client(tc.certs))
			mu.Lock()
			defer mu.Unlock()
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

	// A resumed session carries the verified chain, and a client revoked
	// after its first handshake cannot resume.
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		bob := client(leaf(f.caCert, "bob", testpki.Leaf{}))
		tr := bob.Transport.(*http.Transport)
		tr.TLSClientConfig.MaxVersion = version
		tr.DisableKeepAlives = true // every request is a new handshake
		var resumed []bool
		tr.TLSClientConfig.VerifyConnection = func(cs tls.ConnectionState) error {
			resumed = append(resumed, cs.DidResume)
			return nil
		}
		for range 2 {
			if got, err := get(bob); err != nil || got != "bob via CA localhost" {
				t.Fatalf("TLS %x: %q %v", version, got, err)
			}
		}
		if len(resumed) != 2 || resumed[0] || !resumed[1] {
			t.Fatalf("TLS %x: resumption %v, want [false true]", version, resumed)
		}
		mu.Lock()
		revoked["bob"], refused = true, nil
		mu.Unlock()
		if got, err := get(bob); err == nil {
			t.Fatalf("TLS %x: a revoked client resumed: %q", version, got)
		}
		mu.Lock()
		if len(refused) != 1 || refused[0] != "bob: client certificate revoked" {
			t.Fatalf("TLS %x: refusals %q", version, refused)
		}
		revoked["bob"] = false
		mu.Unlock()
	}
}

// TestCloseClients: the idle connections of refused clients are closed;
// others stay open.
func TestCloseClients(t *testing.T) {
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
	time.Sleep(50 * time.Millisecond) // both connections idle
	if n := srv.CloseClients(func(chain []*x509.Certificate) bool { return chain[0].Subject.CommonName == "mallory" }); n != 1 {
		t.Fatalf("closed %d connections, want 1", n)
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
