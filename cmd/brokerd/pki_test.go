package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/brokerd/brokerd/admin"
	"github.com/brokerd/brokerd/internal/certs"
	"github.com/brokerd/brokerd/internal/swtpmtest"
	"github.com/brokerd/brokerd/policy"
)

// ownCA initialises brokerd with its own CA (no TLS files given), an
// RSA key and a rule letting clients agg-1 and agg-2 sign with it.
func ownCA(t *testing.T, extraConfig string) (*cli, *swtpmtest.TPM) {
	t.Helper()
	sw := swtpmtest.Start(t)
	c := &cli{t: t, dir: t.TempDir()}
	etc := filepath.Join(c.dir, "etc")
	c.config = filepath.Join(etc, "brokerd.toml")
	out := c.must("init", "--dir", etc, "--tpm", sw.Address(), "--listen", "127.0.0.1:0", "--admin-socket", c.adminSocket())
	if !strings.Contains(out, "brokerd's CA (key in the TPM) made") {
		t.Fatalf("init:\n%s", out)
	}
	if extraConfig != "" {
		data, _ := os.ReadFile(c.config)
		os.WriteFile(c.config, []byte(applyConfig(string(data), extraConfig)), 0o640)
	}
	c.importRSA("rsa.key")
	c.must("policy", "allow", "--name", "aggs", "--cn", "agg-1", "--keys", "rsa.key", "--ops", "sign")
	c.must("policy", "allow", "--name", "agg2", "--cn", "agg-2", "--keys", "rsa.key", "--ops", "sign")
	return c, sw
}

func (c *cli) caCert() *x509.Certificate {
	c.t.Helper()
	cs, err := certs.ReadFile(filepath.Join(c.dir, "etc", "tls", "ca.crt"))
	if err != nil {
		c.t.Fatal(err)
	}
	return cs[0]
}

// clientFiles reads the key and certificate client issue wrote.
func clientFiles(t *testing.T, dir, name string) *tls.Certificate {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key"))
	if err != nil {
		t.Fatal(err)
	}
	return &cert
}

func signOK(t *testing.T, c *http.Client, d *proc) response {
	t.Helper()
	return do(t, c, "POST", d.url("/sign"), "application/json", `{"params":{"data":"x","key_id":"rsa.key"}}`)
}

// TestOwnCA: init makes brokerd's CA; client issue, client sign, client
// list, client revoke and tls renew work on the state while the daemon is
// stopped and through its admin socket while it runs, where revocations
// and a new server certificate are in force at once. (How revocation acts
// on connections is the daemon package's TestRevocationAtOnce.)
func TestOwnCA(t *testing.T) {
	t.Parallel()
	c, _ := ownCA(t, "")
	ca := testOwnCAInit(t, c)
	// Issued while the daemon is stopped (directly on the state file).
	agg1Dir := filepath.Join(c.dir, "agg-1")
	c.must("client", "issue", "--name", "agg-1", "--out", agg1Dir)
	if fi, err := os.Stat(filepath.Join(agg1Dir, "agg-1.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}
	if got, _ := os.ReadFile(filepath.Join(agg1Dir, "ca.crt")); string(got) != string(certs.EncodePEM(ca)) {
		t.Fatal("client issue wrote another CA certificate")
	}
	d := c.start()
	if r := signOK(t, client(t, ca, clientFiles(t, agg1Dir, "agg-1")), d); r.status != 200 {
		t.Fatalf("agg-1: %d %s", r.status, r.body)
	}
	agg2, role := testClientSign(t, c, d, ca)
	var clients []struct {
		Name, Serial, Status string
		Roles                []string
	}
	if err := json.Unmarshal([]byte(c.must("client", "list", "--json")), &clients); err != nil || len(clients) != 2 ||
		clients[0].Name != "agg-1" || clients[1].Status != "valid" || clients[1].Roles[0] != role {
		t.Fatalf("client list: %+v %v", clients, err)
	}
	testClientRevoke(t, c, d, ca, clients[0].Serial, agg2)
	// A new server certificate, in force without a restart.
	before := serverSerial(t, d, ca)
	c.must("tls", "renew")
	if after := serverSerial(t, d, ca); after.Cmp(before) == 0 {
		t.Fatal("tls renew: the daemon still serves the old certificate")
	}
	stop(t, d)
	ops := map[string]int{}
	for _, r := range c.export() {
		ops[r.Op]++
		if r.Op == "handshake" && strings.Contains(r.Error, "revoked") && r.Client == "CN=agg-1" {
			ops["handshake revoked"]++
		}
	}
	if ops["admin.client.issue"] != 3 || ops["admin.client.revoke"] != 1 || ops["admin.tls.renew"] != 1 || ops["handshake revoked"] == 0 {
		t.Fatalf("audit records: %v", ops)
	}
}

// testOwnCAInit checks what init made: the CA, a server certificate for
// localhost, 127.0.0.1 and the host's name, both keys in the TPM; and that
// init refuses to run again. It returns the CA certificate.
func testOwnCAInit(t *testing.T, c *cli) *x509.Certificate {
	t.Helper()
	ca := c.caCert()
	if !ca.IsCA || !strings.HasPrefix(ca.Subject.CommonName, "brokerd CA ") {
		t.Fatalf("CA %s", ca.Subject)
	}
	server, _ := certs.ReadFile(filepath.Join(c.dir, "etc", "tls", "server.crt"))
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	for _, name := range []string{"localhost", "127.0.0.1"} {
		if _, err := server[0].Verify(x509.VerifyOptions{Roots: roots, DNSName: name}); err != nil {
			t.Errorf("server certificate for %s: %v", name, err)
		}
	}
	if host, _ := os.Hostname(); host != "" && host != "localhost" {
		if server[0].VerifyHostname(host) != nil {
			t.Errorf("server certificate lacks the host name %s: %v", host, server[0].DNSNames)
		}
	}
	var list []struct{ ID, Kind string }
	json.Unmarshal([]byte(c.must("key", "list", "--all", "--json")), &list)
	kinds := map[string]string{}
	for _, k := range list {
		kinds[k.ID] = k.Kind
	}
	if kinds["brokerd:ca"] != "tpm" || kinds["brokerd:tls-server"] != "tpm" {
		t.Fatalf("brokerd's own keys: %v", kinds)
	}
	c.fail(1, "refusing to overwrite an existing identity", "init", "--dir", filepath.Join(c.dir, "etc"), "--tpm", "swtpm:/nonexistent")
	return ca
}

// testClientSign: client sign through the daemon, for a key and CSR the
// client made; the certificate serves; an altered CSR, a name in use and a
// missing name are refused. It returns agg-2's client and role.
func testClientSign(t *testing.T, c *cli, d *proc, ca *x509.Certificate) (*http.Client, string) {
	t.Helper()
	key2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csrDER, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "whatever"}}, key2)
	csrFile := c.file("agg-2.csr", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER}))
	certFile := filepath.Join(c.dir, "agg-2.crt")
	role := "https://directory.example/roles/ais"
	if out := c.must("client", "sign", "--csr", csrFile, "--name", "agg-2", "--role", role, "--days", "30", "--out", certFile); !strings.Contains(out, `client "agg-2", serial `) {
		t.Fatalf("client sign: %s", out)
	}
	issued, err := certs.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	id := policy.IdentityOf([]*x509.Certificate{issued[0], ca})
	if id.CN != "agg-2" || len(id.Roles) != 1 || id.Roles[0] != role || time.Until(issued[0].NotAfter) > 30*24*time.Hour {
		t.Fatalf("issued %+v until %s", id, issued[0].NotAfter)
	}
	agg2 := client(t, ca, &tls.Certificate{Certificate: [][]byte{issued[0].Raw}, PrivateKey: key2})
	if r := signOK(t, agg2, d); r.status != 200 {
		t.Fatalf("agg-2: %d %s", r.status, r.body)
	}
	tampered := append([]byte(nil), csrDER...)
	tampered[len(tampered)-5] ^= 0x55
	c.fail(1, "the CSR's signature does not verify", "client", "sign", "--csr", c.file("bad.csr", tampered), "--name", "agg-3", "--out", filepath.Join(c.dir, "x.crt"))
	key4, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr4, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key4)
	c.fail(1, `client "agg-2" has a valid certificate`, "client", "sign", "--csr", c.file("agg-4.csr", csr4), "--name", "agg-2", "--out", filepath.Join(c.dir, "x.crt"))
	c.fail(2, "--name is required", "client", "sign", "--csr", csrFile, "--out", filepath.Join(c.dir, "x.crt"))
	return agg2, role
}

// testClientRevoke: client revoke through the daemon is in force at once
// and signs the CRL again; revoking again says when it was; the name is
// free again, for a new key.
func testClientRevoke(t *testing.T, c *cli, d *proc, ca *x509.Certificate, serial string, agg2 *http.Client) {
	t.Helper()
	agg1Dir := filepath.Join(c.dir, "agg-1")
	if out := c.must("client", "revoke", "agg-1"); !strings.Contains(out, `revoked client "agg-1" (serial `+serial+")") {
		t.Fatalf("revoke: %s", out)
	}
	if _, err := client(t, ca, clientFiles(t, agg1Dir, "agg-1")).Get(d.url("/")); err == nil || !strings.Contains(err.Error(), "bad certificate") {
		t.Fatalf("a revoked client's new handshake: %v", err)
	}
	if r := signOK(t, agg2, d); r.status != 200 {
		t.Fatalf("another client after the revocation: %d", r.status)
	}
	crlData, _ := os.ReadFile(filepath.Join(c.dir, "etc", "tls", "crl.pem"))
	block, _ := pem.Decode(crlData)
	crl, err := x509.ParseRevocationList(block.Bytes)
	if err != nil || crl.CheckSignatureFrom(ca) != nil || len(crl.RevokedCertificateEntries) != 1 ||
		crl.RevokedCertificateEntries[0].SerialNumber.Text(16) != serial {
		t.Fatalf("CRL %+v %v", crl, err)
	}
	c.fail(1, "was revoked on", "client", "revoke", serial)
	// The old key file is not overwritten.
	c.fail(1, "agg-1.key exists: refusing to replace it", "client", "issue", "--name", "agg-1", "--out", agg1Dir)
	newDir := filepath.Join(c.dir, "agg-1-new")
	c.must("client", "issue", "--name", "agg-1", "--out", newDir)
	if r := signOK(t, client(t, ca, clientFiles(t, newDir, "agg-1")), d); r.status != 200 {
		t.Fatalf("re-issued agg-1: %d", r.status)
	}
}

func serverSerial(t *testing.T, d *proc, ca *x509.Certificate) *big.Int {
	t.Helper()
	resp, err := client(t, ca, nil).Get(d.url("/health"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.TLS.PeerCertificates[0].SerialNumber
}

// TestRolesFromTheConfiguredExtension: with policy.role_oid set, policy
// allow --role makes a rule, client issue --role puts the role in that
// extension, and policy test shows it. (That the daemon matches it is the
// daemon package's test of the same name.)
func TestRolesFromTheConfiguredExtension(t *testing.T) {
	t.Parallel()
	c, _ := ownCA(t, "policy.role_oid = \"1.3.6.1.4.1.99999.1\"")
	role := "https://directory.example/roles/signer"
	c.must("policy", "allow", "--name", "by-role", "--role", role, "--keys", "rsa.key", "--ops", "sign")
	c.fail(1, "psd2_role", "policy", "allow", "--name", "bad", "--psd2-role", "PSP_XX", "--keys", "rsa.key", "--ops", "sign")
	dir := filepath.Join(c.dir, "clients")
	c.must("client", "issue", "--name", "with-role", "--role", role, "--out", dir)
	out := c.must("policy", "test", "--cert", filepath.Join(dir, "with-role.crt"), "--op", "sign", "--key", "rsa.key")
	if !strings.HasPrefix(out, "allow: ") || !strings.Contains(out, "by-role") || !strings.Contains(out, "roles: "+role) {
		t.Fatalf("policy test:\n%s", out)
	}
	cert, _ := certs.ReadFile(filepath.Join(dir, "with-role.crt"))
	if len(policy.IdentityOf(cert).Roles) != 0 {
		t.Fatal("the roles are under ib1Roles, not the configured extension")
	}
}

// TestAdminSocketEdges: config check inside the daemon; a request the
// daemon must not run for a caller; a call waiting on its caller does not
// hold the daemon's shutdown.
func TestAdminSocketEdges(t *testing.T) {
	t.Parallel()
	c, _ := ownCA(t, "")
	d := c.start()
	out := c.must("config", "check")
	if !strings.Contains(out, "state "+filepath.Join(c.dir, "etc", "state")) || !strings.Contains(out, "key rsa.key (imported, rsa2048, purpose any): ok") {
		t.Fatalf("config check inside the daemon:\n%s", out)
	}
	// A crafted call: audit verify of an arbitrary file, which the command
	// line would have run locally.
	conn, err := admin.Dial(context.Background(), c.adminSocket())
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	code, err := admin.Call(conn, admin.Request{Args: []string{"audit", "verify", "--db", "/etc/passwd"}}, admin.Local{Stdout: io.Discard, Stderr: &stderr})
	if code != 2 || err != nil || !strings.Contains(stderr.String(), "not a command of the admin socket (with these arguments)") {
		t.Fatalf("crafted call: %d %v %q", code, err, stderr.String())
	}
	// key sign waits on its caller's standard input, which stays open: the
	// daemon asking for it tells the call runs.
	conn, err = admin.Dial(context.Background(), c.adminSocket())
	if err != nil {
		t.Fatal(err)
	}
	stdin := &blockingReader{asked: make(chan struct{}), release: make(chan struct{})}
	defer close(stdin.release)
	succeeded := make(chan bool, 1)
	go func() {
		code, err := admin.Call(conn, admin.Request{Args: []string{"key", "sign", "--id", "rsa.key"}}, admin.Local{Stdin: stdin, Stdout: io.Discard, Stderr: io.Discard})
		succeeded <- code == 0 && err == nil
	}()
	select {
	case <-stdin.asked:
	case <-time.After(30 * time.Second):
		t.Fatal("key sign did not ask for its input")
	}
	start := time.Now()
	stop(t, d)
	if time.Since(start) > 10*time.Second {
		t.Fatalf("the daemon took %v to stop", time.Since(start))
	}
	if <-succeeded {
		t.Fatal("key sign succeeded after the daemon stopped")
	}
	var stops int
	for _, r := range c.export() {
		if r.Op == "daemon.stop" {
			stops++
		}
	}
	if stops != 1 {
		t.Fatalf("%d daemon.stop records: the daemon did not stop cleanly", stops)
	}
}

// blockingReader is a caller's standard input that never ends: it says
// when it is first read, then blocks until release is closed.
type blockingReader struct {
	once    sync.Once
	asked   chan struct{}
	release chan struct{}
}

func (b *blockingReader) Read([]byte) (int, error) {
	b.once.Do(func() { close(b.asked) })
	<-b.release
	return 0, io.EOF
}

// TestInitFailureLeavesNothing: an init that fails half-way removes what
// it wrote, and can be run again.
func TestInitFailureLeavesNothing(t *testing.T) {
	t.Parallel()
	sw := swtpmtest.Start(t)
	c := &cli{t: t, dir: t.TempDir()}
	etc := filepath.Join(c.dir, "etc")
	c.config = filepath.Join(etc, "brokerd.toml")
	c.fail(1, `"has space" is neither a DNS name nor an IP address`, "init", "--dir", etc, "--tpm", sw.Address(), "--server-name", "has space")
	for _, f := range []string{"brokerd.toml", "policy.toml", "state/brokerd.db", "tls/server.crt", "tls/ca.crt", "tls/client-ca.pem", "tls/crl.pem"} {
		if _, err := os.Stat(filepath.Join(etc, f)); err == nil {
			t.Errorf("%s left behind", f)
		}
	}
	c.must("init", "--dir", etc, "--tpm", sw.Address(), "--server-name", "broker.lan", "--admin-socket", c.adminSocket())
}
