package netstack_test

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
	"testing"

	"github.com/brokerd/brokerd/internal/testpki"
	"github.com/brokerd/brokerd/netstack"
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
	m, err := netstack.LoadMaterial(f.cert, f.ca, f.key)
	if err != nil {
		t.Fatal(err)
	}
	if m.Cert.Leaf.Subject.CommonName != "a" || len(m.CAs) != 1 {
		t.Fatalf("material %+v", m)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if _, err := netstack.LoadMaterial(f.cert, f.ca, other); err == nil || !strings.Contains(err.Error(), "not the server key") {
		t.Fatalf("mismatched key: %v", err)
	}
	if _, err := netstack.LoadMaterial(f.cert, f.cert+".missing", f.key); err == nil {
		t.Fatal("missing CA file accepted")
	}
	if _, err := netstack.LoadMaterial(testpki.WriteFile(t, filepath.Join(f.dir, "empty"), nil), f.ca, f.key); err == nil {
		t.Fatal("empty certificate file accepted")
	}
}

func TestFailedReloadKeepsMaterial(t *testing.T) {
	good := material(t, "first")
	load := func() (*netstack.Material, error) { return netstack.LoadMaterial(good.cert, good.ca, good.key) }
	calls := 0
	srv, err := netstack.NewServer(netstack.ServerConfig{}, func() (*netstack.Material, error) {
		calls++
		if calls > 1 {
			return nil, errors.New("broken file")
		}
		return load()
	}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if netstack.VerifiedChain(r) == nil {
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
	if _, err := netstack.Listen(nil, nil); err == nil || !strings.Contains(err.Error(), "no API listener") {
		t.Fatalf("no listener: %v", err)
	}
	if _, err := netstack.Listen([]string{"256.0.0.1:1"}, nil); err == nil {
		t.Fatal("bad address accepted")
	}
	ls, err := netstack.Listen([]string{"127.0.0.1:0"}, []string{"127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	if len(ls.API) != 1 || len(ls.Health) != 1 {
		t.Fatalf("listeners %+v", ls)
	}
}
