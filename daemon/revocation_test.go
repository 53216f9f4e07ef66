package daemon_test

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/brokerd/brokerd/daemon"
	"github.com/brokerd/brokerd/internal/testpki"
	"github.com/brokerd/brokerd/pki"
	"github.com/brokerd/brokerd/tpm"
)

// refused checks that c's next request fails: its idle connection closed
// (the request fails, or goes out on a new connection whose handshake is
// refused) or, had the connection been busy when the revocation came,
// 403 on it.
func refused(t *testing.T, what string, c *http.Client, r *running) {
	t.Helper()
	req, _ := http.NewRequest("POST", r.url("/sign"), strings.NewReader(`{"params":{"data":"x","key_id":"ec.key"}}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Fatalf("%s: answered %d", what, resp.StatusCode)
	}
}

// TestRevocationAtOnce: once the registry has revoked a client of
// brokerd's CA, ApplyRevocations (what client revoke calls) refuses it,
// on its open connection and on new handshakes, on record; other clients
// go on. Nothing watches brokerd's own revocations (there is no file), so
// the refusal is ApplyRevocations' own: at once, whatever the time a
// handshake takes on a loaded machine.
func TestRevocationAtOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false)
	s := f.state()
	addKey(t, s, "ec.key", tpm.P256)
	agg1, agg2 := issueClient(t, s, pki.Client{Name: "agg-1"}), issueClient(t, s, pki.Client{Name: "agg-2"})
	s.Close()
	f.writePolicy(signRule("aggs", "agg-1", "ec.key"), signRule("agg2", "agg-2", "ec.key"))
	r := f.start(daemon.Deps{})
	a1 := f.client(agg1)
	if resp := sign(t, a1, r, "ec.key"); resp.status != 200 {
		t.Fatalf("before: %d %s", resp.status, resp.body)
	}
	if _, err := r.State().PKI.Registry().Revoke("agg-1", time.Now()); err != nil {
		t.Fatal(err)
	}
	r.ApplyRevocations()
	refused(t, "the revoked client's next request", a1, r)
	if _, err := f.client(agg1).Get(r.url("/")); err == nil || !strings.Contains(err.Error(), "bad certificate") {
		t.Fatalf("a revoked client's new handshake: %v", err)
	}
	if resp := sign(t, f.client(agg2), r, "ec.key"); resp.status != 200 {
		t.Fatalf("another client after the revocation: %d", resp.status)
	}
	r.logs.wait(t, 1, "revocations in force")
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	var onRecord bool
	for _, rec := range auditRecords(t, f.cfg.StatePath()) {
		onRecord = onRecord || (rec.Op == "handshake" && rec.Client == "CN=agg-1" && strings.Contains(rec.Error, "revoked"))
	}
	if !onRecord {
		t.Fatal("no handshake record of the revoked client")
	}
}

// crlFiles writes the CRL file of a PKI of one's own: a CRL of each CA,
// in one file, by rename.
type crlFiles struct {
	path string
	cas  []*testpki.CA
}

func (c *crlFiles) write(t *testing.T, revoked ...[]*big.Int) {
	t.Helper()
	var data []byte
	for i, ca := range c.cas {
		tmpl := &x509.RevocationList{Number: big.NewInt(time.Now().UnixNano()), ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: time.Now().Add(time.Hour)}
		for _, s := range revoked[i] {
			tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: time.Now()})
		}
		der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
		if err != nil {
			t.Fatal(err)
		}
		data = append(data, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})...)
	}
	replace(t, c.path, data)
}

// TestClientCRLFiles: with a PKI of one's own, an intermediate CA issues
// the clients; CRL files of the intermediate and of the root apply to new
// handshakes and open connections when they change, without a restart.
func TestClientCRLFiles(t *testing.T) {
	t.Parallel()
	f := newFixture(t, true)
	s := f.state()
	addKey(t, s, "ec.key", tpm.P256)
	s.Close()
	f.writePolicy(signRule("agg", "agg-1", "ec.key"))
	interCert, interKey := f.ca.IssueKey(t, testpki.Leaf{Subject: pkix.Name{CommonName: "Client Issuer"}, IsCA: true})
	inter := &testpki.CA{Cert: interCert, Key: interKey}
	leaf := func(cn string) *tls.Certificate {
		cert, key := inter.IssueKey(t, testpki.Leaf{Subject: pkix.Name{CommonName: cn}, ExtUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		return &tls.Certificate{Certificate: [][]byte{cert.Raw, interCert.Raw}, PrivateKey: key, Leaf: cert}
	}
	crls := &crlFiles{path: filepath.Join(f.dir, "etc", "client-crls.pem"), cas: []*testpki.CA{inter, f.ca}}
	crls.write(t, nil, nil)
	f.cfg.API.CRLFiles = []string{crls.path}
	r := f.start(daemon.Deps{})
	agg1, agg1b := leaf("agg-1"), leaf("agg-1")
	a := f.client(agg1)
	if resp := sign(t, a, r, "ec.key"); resp.status != 200 {
		t.Fatalf("through the intermediate: %d %s", resp.status, resp.body)
	}
	crls.write(t, []*big.Int{agg1.Leaf.SerialNumber}, nil)
	r.logs.wait(t, 1, "revocations in force")
	if _, err := f.client(agg1).Get(r.url("/")); err == nil {
		t.Fatal("the CRL file's change did not take effect")
	}
	refused(t, "the revoked client's open connection", a, r)
	if _, err := f.client(agg1b).Get(r.url("/")); err != nil {
		t.Fatalf("another client of the intermediate: %v", err)
	}
	// The root revokes the intermediate: all its clients fall.
	crls.write(t, nil, []*big.Int{interCert.SerialNumber})
	r.logs.wait(t, 2, "revocations in force")
	if _, err := f.client(agg1b).Get(r.url("/")); err == nil {
		t.Fatal("revoking the intermediate did not take effect")
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	if n := countOps(auditRecords(t, f.cfg.StatePath()))["admin.crl.reload"]; n != 2 {
		t.Fatalf("%d CRL reloads on record, want 2", n)
	}
}
