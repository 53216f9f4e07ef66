package main

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/brokerd/brokerd/internal/mockbank"
	"github.com/brokerd/brokerd/internal/testpki"
)

// TestMakeRequestEndToEnd drives the shipped binary against a mock bank:
// a QWAC made in the TPM and certified by the bank's QTSP, the bank's CA
// trusted with `brokerd trust add` while the daemon runs, a policy with an
// explicit private-address permission for the bank's literal loopback host,
// and destination binding with `brokerd key origins`.
func TestMakeRequestEndToEnd(t *testing.T) {
	t.Parallel()
	bank := mockbank.Start(t, mockbank.Options{})
	c, _, p := newDeployment(t, "")
	csr := filepath.Join(c.dir, "qwac.csr")
	c.must("key", "create", "--id", "qwac.key", "--alg", "p256", "--subject", "CN=tpp.example", "--csr-out", csr)
	req, err := x509.ParseCertificateRequest(pemBlock(t, csr))
	if err != nil {
		t.Fatal(err)
	}
	qwac := bank.QTSP.Issue(t, req.PublicKey, testpki.Leaf{Subject: pkix.Name{CommonName: "tpp.example"}, ExtUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	c.must("key", "cert", "--id", "qwac.key", "--cert", c.file("qwac.crt", testpki.CertPEM(qwac)), "--chain", c.file("qtsp.crt", testpki.CertPEM(bank.QTSP.Cert)))
	c.must("policy", "allow", "--name", "agg-bank", "--cn", "agg-1", "--keys", "qwac.key", "--ops", "makeRequest", "--origin", bank.URL, "--allow-private")
	d := c.start()

	curl := func(body string) string {
		t.Helper()
		out, err := exec.Command("curl", "-sS", "--cert", p.certFile, "--key", p.keyFile, "--cacert", p.caFile,
			"-H", "Content-Type: application/json", "-d", body, "https://"+d.addr+"/makeRequest").CombinedOutput()
		if err != nil {
			t.Fatalf("curl: %v\n%s", err, out)
		}
		return string(out)
	}
	body := `{"params":{"request":{"method":"GET","origin":"` + bank.URL + `","path":"/echo/accounts","query":[["limit","10"]],` +
		`"tls":{"cert_path":"qwac.crt","key_path":"qwac.key"}}}}`
	if out := curl(body); !strings.Contains(out, `"message":"Untrusted bank certificate"`) {
		t.Fatalf("before trust add: %s", out)
	}
	c.must("trust", "add", "--ca", c.file("bank-ca.crt", testpki.CertPEM(bank.CA.Cert)), "--origin", bank.URL)
	if out := c.must("trust", "list", "--json"); !strings.Contains(out, `"origin": "`+bank.URL+`"`) {
		t.Fatalf("trust list: %s", out)
	}
	// trust add reached the daemon through its admin socket, which put the
	// CA in force before the command returned.
	out := curl(body)
	var r struct {
		Result struct {
			Status      int        `json:"status"`
			Headers     [][]string `json:"headers"`
			Response    string     `json:"response"`
			Certificate string     `json:"certificate"`
		} `json:"result"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil || r.Result.Status != 200 {
		t.Fatalf("after trust add, no restart: %s", out)
	}
	var e mockbank.Echo
	json.Unmarshal([]byte(r.Result.Response), &e)
	if e.Target != "/echo/accounts?limit=10" || e.ClientCN != "tpp.example" || !strings.Contains(r.Result.Certificate, "BEGIN CERTIFICATE") {
		t.Fatalf("bank saw %+v; certificate %q", e, r.Result.Certificate)
	}
	// Another client, and another origin, are refused.
	other := strings.Replace(body, bank.URL, "https://api.other-bank.example", 1)
	if out := curl(other); !strings.Contains(out, `"code":403`) {
		t.Fatalf("origin outside the rule: %s", out)
	}
	// Bound to another origin, the QWAC may no longer reach the bank.
	d.kill()
	c.must("key", "origins", "--id", "qwac.key", "--origin", "https://api.other-bank.example")
	d = c.start()
	if out := curl(body); !strings.Contains(out, `is bound to other origins than `+bank.URL) {
		t.Fatalf("bound QWAC: %s", out)
	}
	c.fail(1, "no trusted CA", "trust", "remove", "--ca", "00000000")
}

func pemBlock(t *testing.T, path string) []byte {
	t.Helper()
	cs, err := exec.Command("openssl", "req", "-in", path, "-outform", "DER").Output()
	if err != nil {
		t.Fatal(err)
	}
	return cs
}
