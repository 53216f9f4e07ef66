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
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/brokerd/brokerd/admin"
	"github.com/brokerd/brokerd/internal/certs"
	"github.com/brokerd/brokerd/internal/swtpmtest"
	"github.com/brokerd/brokerd/internal/testpki"
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
	out := c.must("init", "--dir", etc, "--tpm", sw.Address(), "--listen", "127.0.0.1:0", "--admin-socket", filepath.Join(c.dir, "admin.sock"))
	if !strings.Contains(out, "brokerd's CA (key in the TPM) made") {
		t.Fatalf("init:\n%s", out)
	}
	if extraConfig != "" {
		data, _ := os.ReadFile(c.config)
		os.WriteFile(c.config, []byte(applyConfig(string(data), extraConfig)), 0o640)
	}
	c.must("key", "create", "--id", "rsa.key", "--alg", "rsa2048")
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

func TestOwnCA(t *testing.T) {
	c, _ := ownCA(t, "")
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
	// A second init over it is refused.
	c.fail(1, "refusing to overwrite an existing identity", "init", "--dir", filepath.Join(c.dir, "etc"), "--tpm", "swtpm:/nonexistent")

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
	agg1 := client(t, ca, clientFiles(t, agg1Dir, "agg-1"))
	if r := signOK(t, agg1, d); r.status != 200 {
		t.Fatalf("agg-1: %d %s", r.status, r.body)
	}

	// Signed through the daemon: the client made its key and CSR.
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
	// Refusals: a CSR altered on the way, a name in use, a weak key.
	tampered := append([]byte(nil), csrDER...)
	tampered[len(tampered)-5] ^= 0x55
	c.fail(1, "the CSR's signature does not verify", "client", "sign", "--csr", c.file("bad.csr", tampered), "--name", "agg-3", "--out", filepath.Join(c.dir, "x.crt"))
	key4, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr4, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key4)
	c.fail(1, `client "agg-2" has a valid certificate`, "client", "sign", "--csr", c.file("agg-4.csr", csr4), "--name", "agg-2", "--out", filepath.Join(c.dir, "x.crt"))
	c.fail(2, "--name is required", "client", "sign", "--csr", csrFile, "--out", filepath.Join(c.dir, "x.crt"))

	var clients []struct {
		Name, Serial, Status string
		Roles                []string
	}
	if err := json.Unmarshal([]byte(c.must("client", "list", "--json")), &clients); err != nil || len(clients) != 2 ||
		clients[0].Name != "agg-1" || clients[1].Status != "valid" || clients[1].Roles[0] != role {
		t.Fatalf("client list: %+v %v", clients, err)
	}

	// Revocation: at once, for open connections and new handshakes.
	out := c.must("client", "revoke", "agg-1")
	if !strings.Contains(out, `revoked client "agg-1" (serial `+clients[0].Serial+")") {
		t.Fatalf("revoke: %s", out)
	}
	start := time.Now()
	req, _ := http.NewRequest("POST", d.url("/sign"), strings.NewReader(`{"params":{"data":"x","key_id":"rsa.key"}}`))
	req.Header.Set("Content-Type", "application/json")
	// Its idle connection was closed: the request goes out on a new one,
	// whose handshake fails (or, had it been busy, 403 and closed).
	if resp, err := agg1.Do(req); err == nil {
		resp.Body.Close()
		if resp.StatusCode != 403 {
			t.Fatalf("the revoked client's connection answered %d", resp.StatusCode)
		}
	} else if !strings.Contains(err.Error(), "bad certificate") {
		t.Fatalf("the revoked client's next request: %v", err)
	}
	fresh := client(t, ca, clientFiles(t, agg1Dir, "agg-1"))
	if _, err := fresh.Get(d.url("/")); err == nil || !strings.Contains(err.Error(), "bad certificate") {
		t.Fatalf("a revoked client's new handshake: %v", err)
	}
	if time.Since(start) > time.Second {
		t.Errorf("refusing the revoked client took %v", time.Since(start))
	}
	if r := signOK(t, agg2, d); r.status != 200 {
		t.Fatalf("another client after the revocation: %d", r.status)
	}
	crlData, _ := os.ReadFile(filepath.Join(c.dir, "etc", "tls", "crl.pem"))
	block, _ := pem.Decode(crlData)
	crl, err := x509.ParseRevocationList(block.Bytes)
	if err != nil || crl.CheckSignatureFrom(ca) != nil || len(crl.RevokedCertificateEntries) != 1 ||
		crl.RevokedCertificateEntries[0].SerialNumber.Text(16) != clients[0].Serial {
		t.Fatalf("CRL %+v %v", crl, err)
	}
	c.fail(1, "was revoked on", "client", "revoke", clients[0].Serial)
	// The name is free again, for a new key; the old key file is not
	// overwritten.
	c.fail(1, "agg-1.key exists: refusing to replace it", "client", "issue", "--name", "agg-1", "--out", agg1Dir)
	agg1Dir = filepath.Join(c.dir, "agg-1-new")
	c.must("client", "issue", "--name", "agg-1", "--out", agg1Dir)
	if r := signOK(t, client(t, ca, clientFiles(t, agg1Dir, "agg-1")), d); r.status != 200 {
		t.Fatalf("re-issued agg-1: %d", r.status)
	}

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

func serverSerial(t *testing.T, d *proc, ca *x509.Certificate) *big.Int {
	t.Helper()
	resp, err := client(t, ca, nil).Get(d.url("/health"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.TLS.PeerCertificates[0].SerialNumber
}

// TestServerCertificateRenewsItself: pki.renew_before its end, the daemon
// issues a new server certificate and serves it, without a restart.
func TestServerCertificateRenewsItself(t *testing.T) {
	c, _ := ownCA(t, "pki.server_validity = \"65s\"\npki.renew_before = \"60s\"")
	d := c.start()
	ca := c.caCert()
	c.must("tls", "renew") // valid 65 s: due 5 s from now
	first := serverSerial(t, d, ca)
	deadline := time.Now().Add(30 * time.Second)
	for serverSerial(t, d, ca).Cmp(first) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the server certificate was not renewed")
		}
		time.Sleep(200 * time.Millisecond)
	}
	stop(t, d)
	n := 0
	for _, r := range c.export() {
		if r.Op == "admin.tls.renew" && r.Client == "daemon" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d renewals by the daemon on record", n)
	}
}

// TestClientCRLFiles: with a PKI of one's own, an intermediate CA issues
// the clients; CRL files of the intermediate and of the root apply to new
// handshakes and open connections when they change, without a restart.
func TestClientCRLFiles(t *testing.T) {
	c, _, p := newDeployment(t, "api.crl_files = [\"client-crls.pem\"]")
	crlPath := filepath.Join(c.dir, "etc", "client-crls.pem")
	interCert, interKey := p.ca.IssueKey(t, testpki.Leaf{Subject: pkix.Name{CommonName: "Client Issuer"}, IsCA: true})
	inter := &testpki.CA{Cert: interCert, Key: interKey}
	leaf := func(cn string) *tls.Certificate {
		cert, key := inter.IssueKey(t, testpki.Leaf{Subject: pkix.Name{CommonName: cn}, ExtUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		return &tls.Certificate{Certificate: [][]byte{cert.Raw, interCert.Raw}, PrivateKey: key, Leaf: cert}
	}
	writeCRLs := func(byInter, byRoot []*big.Int) {
		var data []byte
		for _, x := range []struct {
			ca      *testpki.CA
			serials []*big.Int
		}{{inter, byInter}, {p.ca, byRoot}} {
			tmpl := &x509.RevocationList{Number: big.NewInt(time.Now().UnixNano()), ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: time.Now().Add(time.Hour)}
			for _, s := range x.serials {
				tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: time.Now()})
			}
			der, err := x509.CreateRevocationList(rand.Reader, tmpl, x.ca.Cert, x.ca.Key)
			if err != nil {
				t.Fatal(err)
			}
			data = append(data, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})...)
		}
		tmp := crlPath + ".tmp"
		os.WriteFile(tmp, data, 0o644)
		os.Rename(tmp, crlPath)
	}
	writeCRLs(nil, nil)
	d := c.start()
	agg1, agg1b := leaf("agg-1"), leaf("agg-1")
	a := client(t, p.ca.Cert, agg1)
	if r := do(t, a, "POST", d.url("/sign"), "application/json", `{"params":{"data":"x","key_id":"rsa.key"}}`); r.status != 200 {
		t.Fatalf("through the intermediate: %d %s", r.status, r.body)
	}
	writeCRLs([]*big.Int{agg1.Leaf.SerialNumber}, nil)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := client(t, p.ca.Cert, agg1).Get(d.url("/")); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the CRL file's change did not take effect")
		}
		time.Sleep(100 * time.Millisecond)
	}
	req, _ := http.NewRequest("GET", d.url("/keys"), nil)
	if resp, err := a.Do(req); err == nil {
		resp.Body.Close()
		if resp.StatusCode != 403 {
			t.Fatalf("the revoked client's open connection answered %d", resp.StatusCode)
		}
	}
	if _, err := client(t, p.ca.Cert, agg1b).Get(d.url("/")); err != nil {
		t.Fatalf("another client of the intermediate: %v", err)
	}
	// The root revokes the intermediate: all its clients fall.
	writeCRLs(nil, []*big.Int{interCert.SerialNumber})
	deadline = time.Now().Add(5 * time.Second)
	for {
		if _, err := client(t, p.ca.Cert, agg1b).Get(d.url("/")); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("revoking the intermediate did not take effect")
		}
		time.Sleep(100 * time.Millisecond)
	}
	stop(t, d)
	var reloads int
	for _, r := range c.export() {
		if r.Op == "admin.crl.reload" {
			reloads++
		}
	}
	if reloads < 2 {
		t.Fatalf("%d CRL reloads on record", reloads)
	}
}

// TestRolesFromTheConfiguredExtension: client certificates carry roles in
// the extension the configuration names; rules match them, and policy test
// shows them.
func TestRolesFromTheConfiguredExtension(t *testing.T) {
	c, _ := ownCA(t, "policy.role_oid = \"1.3.6.1.4.1.99999.1\"")
	role := "https://directory.example/roles/signer"
	c.must("policy", "allow", "--name", "by-role", "--role", role, "--keys", "rsa.key", "--ops", "sign")
	c.fail(1, "psd2_role", "policy", "allow", "--name", "bad", "--psd2-role", "PSP_XX", "--keys", "rsa.key", "--ops", "sign")
	dir := filepath.Join(c.dir, "clients")
	c.must("client", "issue", "--name", "with-role", "--role", role, "--out", dir)
	c.must("client", "issue", "--name", "without", "--out", dir)
	d := c.start()
	ca := c.caCert()
	if r := signOK(t, client(t, ca, clientFiles(t, dir, "with-role")), d); r.status != 200 {
		t.Fatalf("with the role: %d %s", r.status, r.body)
	}
	if r := signOK(t, client(t, ca, clientFiles(t, dir, "without")), d); r.status != 403 {
		t.Fatalf("without: %d %s", r.status, r.body)
	}
	out := c.must("policy", "test", "--cert", filepath.Join(dir, "with-role.crt"), "--op", "sign", "--key", "rsa.key")
	if !strings.HasPrefix(out, "allow: ") || !strings.Contains(out, "by-role") || !strings.Contains(out, "roles: "+role) {
		t.Fatalf("policy test:\n%s", out)
	}
	cert, _ := certs.ReadFile(filepath.Join(dir, "with-role.crt"))
	if len(policy.IdentityOf(cert).Roles) != 0 {
		t.Fatal("the roles are under ib1Roles, not the configured extension")
	}
	stop(t, d)
}

// TestAdminSocketEdges: config check inside the daemon; a request the
// daemon must not run for a caller; a call waiting on its caller does not
// hold the daemon's shutdown.
func TestAdminSocketEdges(t *testing.T) {
	c, _ := ownCA(t, "")
	d := c.start()
	out := c.must("config", "check")
	if !strings.Contains(out, "state "+filepath.Join(c.dir, "etc", "state")) || !strings.Contains(out, "key rsa.key (tpm, rsa2048): ok") {
		t.Fatalf("config check inside the daemon:\n%s", out)
	}
	// A crafted call: audit verify of an arbitrary file, which the command
	// line would have run locally.
	conn, err := admin.Dial(context.Background(), filepath.Join(c.dir, "admin.sock"))
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	code, err := admin.Call(conn, admin.Request{Args: []string{"audit", "verify", "--db", "/etc/passwd"}}, admin.Local{Stdout: io.Discard, Stderr: &stderr})
	if code != 2 || err != nil || !strings.Contains(stderr.String(), "not a command of the admin socket (with these arguments)") {
		t.Fatalf("crafted call: %d %v %q", code, err, stderr.String())
	}
	// key sign waits on its caller's standard input, which stays open.
	cmd := exec.Command(brokerdBin, "key", "sign", "--id", "rsa.key")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "BROKERD_CONFIG=" + c.config}
	stdin, _ := cmd.StdinPipe()
	defer stdin.Close()
	var cliErr strings.Builder
	cmd.Stderr = &cliErr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	stop(t, d)
	if time.Since(start) > 10*time.Second {
		t.Fatalf("the daemon took %v to stop", time.Since(start))
	}
	if err := cmd.Wait(); err == nil {
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

// TestInitFailureLeavesNothing: an init that fails half-way removes what
// it wrote, and can be run again.
func TestInitFailureLeavesNothing(t *testing.T) {
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
	c.must("init", "--dir", etc, "--tpm", sw.Address(), "--server-name", "broker.lan", "--admin-socket", filepath.Join(c.dir, "admin.sock"))
}
