package daemon_test

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/brokerd/brokerd/audit"
	"github.com/brokerd/brokerd/daemon"
	"github.com/brokerd/brokerd/internal/testpki"
)

// rotation is new TLS material for a running daemon: a server certificate
// of a new CA for the same TPM key, that CA as the client CA, and a client
// of it.
type rotation struct {
	ca     *testpki.CA
	server *x509.Certificate
	client *tls.Certificate
}

func newRotation(t *testing.T, f *fixture) *rotation {
	t.Helper()
	ca := testpki.NewCA(t, "Rotated CA")
	old := readCert(t, f.cfg.API.TLSCert)
	// Its own subject, so that the log tells when it is in force.
	server := ca.Issue(t, old.PublicKey, testpki.Leaf{Subject: pkix.Name{CommonName: "localhost", Organization: []string{"Rotated"}},
		DNSNames: []string{"localhost"}, IPs: []net.IP{net.ParseIP("127.0.0.1")}, ExtUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	cert, key := ca.IssueKey(t, testpki.Leaf{Subject: pkix.Name{CommonName: "agg-1"}, ExtUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	return &rotation{ca: ca, server: server, client: &tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}}
}

// write puts the rotation's files in place, each by rename, the client CA
// first: whoever sees the new server certificate sees the new client CA.
func (rot *rotation) write(t *testing.T, f *fixture) {
	t.Helper()
	replace(t, f.cfg.API.ClientCA, testpki.CertPEM(rot.ca.Cert))
	replace(t, f.cfg.API.TLSCert, testpki.CertPEM(rot.server))
}

// replace writes path by rename, as an operator's tools should.
func replace(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// served checks that new handshakes use the rotation's material: the old
// client (who trusts the old CA) is refused, the rotation's client served.
func (rot *rotation) served(t *testing.T, r *running, old *tls.Certificate) {
	t.Helper()
	if _, err := r.f.client(old).Get(r.url("/")); err == nil {
		t.Fatal("the old server certificate and client CA are still in use")
	}
	if resp := do(t, clientOf(rot.ca.Cert, rot.client), "GET", r.url("/"), "", ""); resp.status != 200 {
		t.Fatalf("with the new material: %d %s", resp.status, resp.body)
	}
}

// tlsReloads are the admin.tls.reload records of a stopped daemon.
func tlsReloads(t *testing.T, f *fixture) []audit.Record {
	t.Helper()
	var out []audit.Record
	for _, rec := range auditRecords(t, f.cfg.StatePath()) {
		if rec.Op == "admin.tls.reload" {
			out = append(out, rec)
		}
	}
	return out
}

// TestTLSFilesReloadByThemselves: TLS files changed on disk are in force
// for new handshakes without a signal; a broken one is refused, on record,
// and the material in force stays.
func TestTLSFilesReloadByThemselves(t *testing.T) {
	t.Parallel()
	f := newFixture(t, true)
	r := f.start(daemon.Deps{})
	old := f.byoClient("agg-1")
	if resp := do(t, f.client(old), "GET", r.url("/"), "", ""); resp.status != 200 {
		t.Fatalf("before: %d %s", resp.status, resp.body)
	}
	rot := newRotation(t, f)
	rot.write(t, f)
	r.logs.wait(t, 1, "tls material loaded", "Rotated")
	rot.served(t, r, old)

	replace(t, f.cfg.API.TLSCert, []byte("not a certificate"))
	r.logs.wait(t, 1, "TLS material changed but does not load; keeping what is in force")
	if resp := do(t, clientOf(rot.ca.Cert, rot.client), "GET", r.url("/"), "", ""); resp.status != 200 {
		t.Fatalf("after a broken file: %d %s", resp.status, resp.body)
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	reloads := tlsReloads(t, f)
	if len(reloads) < 2 || reloads[0].Status != 200 || reloads[len(reloads)-1].Status != 500 || reloads[len(reloads)-1].Error == "" {
		t.Fatalf("admin.tls.reload records %+v; want the rotation's and the broken file's, in that order", reloads)
	}
}

// TestReloadAsSIGHUP: Reload, which SIGHUP calls, tells systemd it
// reloads, puts changed files in force before it returns, and keeps what
// is in force when a file is broken, on record.
func TestReloadAsSIGHUP(t *testing.T) {
	t.Parallel()
	f := newFixture(t, true)
	r := f.start(daemon.Deps{WatchInterval: time.Hour}) // no watcher in the way
	old := f.byoClient("agg-1")
	r.notes.take()
	rot := newRotation(t, f)
	rot.write(t, f)
	r.Reload()
	notes := r.notes.take()
	if len(notes) != 2 || !strings.HasPrefix(notes[0], "RELOADING=1\nMONOTONIC_USEC=") ||
		!strings.HasPrefix(notes[1], "READY=1\nSTATUS=serving the API on "+r.addr+" ") {
		t.Fatalf("told systemd %q", notes)
	}
	rot.served(t, r, old)

	replace(t, f.cfg.API.TLSCert, []byte("not a certificate"))
	r.Reload()
	r.logs.wait(t, 1, "reload: TLS material does not load; keeping the one in use")
	if resp := do(t, clientOf(rot.ca.Cert, rot.client), "GET", r.url("/"), "", ""); resp.status != 200 {
		t.Fatalf("after a broken file: %d %s", resp.status, resp.body)
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	reloads := tlsReloads(t, f)
	if len(reloads) != 2 || reloads[0].Status != 200 || reloads[1].Status != 500 || !strings.Contains(reloads[1].Error, "server.crt") {
		t.Fatalf("admin.tls.reload records %+v; want one in force and one refused", reloads)
	}
	ops := countOps(auditRecords(t, f.cfg.StatePath()))
	if ops["admin.policy.reload"] != 2 || ops["admin.trust.reload"] != 2 {
		t.Fatalf("records %v: Reload reloads the policy and the bank CAs too", ops)
	}
}
