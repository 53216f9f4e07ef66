package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/brokerd/brokerd/internal/swtpmtest"
	"github.com/brokerd/brokerd/internal/testpki"
)

// byoPKI is the certificates of one test deployment.
type byoPKI struct {
	ca         *testpki.CA
	caFile     string
	clientCert *x509.Certificate
	clientKey  *ecdsa.PrivateKey
	certFile   string // client certificate
	keyFile    string // client key
}

// newDeployment initialises brokerd with bring-your-own PKI made by the
// test (server key imported into the TPM), the reference example key as
// qseal.key, a TPM RSA-2048 key and a P-256 key, and a policy for the
// client "agg-1".
func newDeployment(t *testing.T, extraConfig string) (*cli, *swtpmtest.TPM, *byoPKI) {
	t.Helper()
	return newDeploymentIn(t, extraConfig, "")
}

// newDeploymentIn is newDeployment with the state in stateDir ("" for the
// default).
func newDeploymentIn(t *testing.T, extraConfig, stateDir string) (*cli, *swtpmtest.TPM, *byoPKI) {
	t.Helper()
	sw := swtpmtest.Start(t)
	c := &cli{t: t, dir: t.TempDir()}
	p := &byoPKI{ca: testpki.NewCA(t, "Test Client CA")}
	serverCert, serverKey := p.ca.IssueKey(t, testpki.Leaf{Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, IPs: []net.IP{net.ParseIP("127.0.0.1")}, ExtUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	p.clientCert, p.clientKey = p.ca.IssueKey(t, testpki.Leaf{Subject: pkix.Name{CommonName: "agg-1"}, ExtUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	p.caFile = c.file("ca.crt", testpki.CertPEM(p.ca.Cert))
	p.certFile = c.file("client.crt", testpki.CertPEM(p.clientCert))
	p.keyFile = c.file("client.key", testpki.KeyPEM(t, p.clientKey))
	etc := filepath.Join(c.dir, "etc")
	c.config = filepath.Join(etc, "brokerd.toml")
	args := []string{"init", "--dir", etc, "--tpm", sw.Address(), "--listen", "127.0.0.1:0",
		"--tls-cert", c.file("server.crt", testpki.CertPEM(serverCert)),
		"--tls-key", c.file("server.key", testpki.KeyPEM(t, serverKey)), "--client-ca", p.caFile,
		"--admin-socket", filepath.Join(c.dir, "admin.sock")}
	if stateDir != "" {
		args = append(args, "--state-dir", stateDir)
	}
	c.must(args...)
	if extraConfig != "" {
		data, _ := os.ReadFile(c.config)
		os.WriteFile(c.config, []byte(applyConfig(string(data), extraConfig)), 0o640)
	}
	c.must("key", "import", "--id", "qseal.key", "--key", "../../testdata/reference/example.key")
	c.must("key", "create", "--id", "rsa.key", "--alg", "rsa2048")
	c.must("key", "create", "--id", "ec.key", "--alg", "p256", "--alias", "ec-alias")
	c.must("key", "create", "--id", "denied.key", "--alg", "p256")
	c.must("policy", "allow", "--name", "agg", "--cn", "agg-1", "--keys", "qseal.key,rsa.key,ec-alias", "--ops", "sign")
	return c, sw, p
}

// applyConfig sets "section.key = value" lines (given one per line) in a
// rendered configuration.
func applyConfig(file, settings string) string {
	for _, line := range strings.Split(strings.TrimSpace(settings), "\n") {
		kv := strings.SplitN(line, "=", 2)
		section, key, _ := strings.Cut(strings.TrimSpace(kv[0]), ".")
		re := regexp.MustCompile(`(?ms)(^\[` + section + `\]\n.*?^)` + key + ` = [^\n]*`)
		file = re.ReplaceAllString(file, "${1}"+key+" = "+strings.TrimSpace(kv[1]))
	}
	return file
}

// proc is a running `brokerd serve`.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	addr   string // API host:port
	logs   *syncBuffer
	notify net.PacketConn
	exited chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// start runs brokerd serve and waits for READY=1 on a notify socket, as
// systemd would.
func (c *cli) start() *proc {
	c.t.Helper()
	sockDir, err := os.MkdirTemp("", "notify")
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { os.RemoveAll(sockDir) })
	sock := filepath.Join(sockDir, "s")
	pc, err := net.ListenPacket("unixgram", sock)
	if err != nil {
		c.t.Fatal(err)
	}
	d := &proc{t: c.t, logs: &syncBuffer{}, notify: pc, exited: make(chan error, 1)}
	d.cmd = exec.Command(brokerdBin, "serve")
	d.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "BROKERD_CONFIG=" + c.config, "NOTIFY_SOCKET=" + sock}, c.env...)
	d.cmd.Stdout, d.cmd.Stderr = d.logs, d.logs
	if err := d.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	go func() { d.exited <- d.cmd.Wait() }()
	c.t.Cleanup(func() {
		d.cmd.Process.Kill()
		<-d.exited
		pc.Close()
		if c.t.Failed() {
			c.t.Logf("brokerd log:\n%s", d.logs)
		}
	})
	msg := d.waitNotify("READY=1")
	m := regexp.MustCompile(`STATUS=serving the API on (\S+)`).FindStringSubmatch(msg)
	if m == nil {
		c.t.Fatalf("READY without the API address: %q", msg)
	}
	d.addr = m[1]
	return d
}

// waitNotify reads notify messages until one contains want.
func (d *proc) waitNotify(want string) string {
	d.t.Helper()
	buf := make([]byte, 4096)
	deadline := time.Now().Add(30 * time.Second)
	for {
		d.notify.SetReadDeadline(deadline)
		n, _, err := d.notify.ReadFrom(buf)
		if err != nil {
			d.t.Fatalf("waiting for %q from brokerd: %v\nlog:\n%s", want, err, d.logs)
		}
		if msg := string(buf[:n]); strings.Contains(msg, want) {
			return msg
		}
	}
}

func (d *proc) url(path string) string { return "https://" + d.addr + path }

// client returns an HTTP client presenting cert (nil: none) and trusting ca.
func client(t *testing.T, ca *x509.Certificate, cert *tls.Certificate) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	cfg := &tls.Config{RootCAs: pool, ServerName: "localhost"}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 30 * time.Second}
}

func tlsCert(cert *x509.Certificate, key *ecdsa.PrivateKey) *tls.Certificate {
	return &tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
}

type response struct {
	status int
	header http.Header
	body   string
}

func do(t *testing.T, c *http.Client, method, url, contentType, body string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	noInternals(t, string(b))
	return response{resp.StatusCode, resp.Header, string(b)}
}

var internals = regexp.MustCompile(`/tmp/|/etc/|/var/|\.go:\d|goroutine |github\.com/|\*tpm\.|\*keys\.|panic|runtime\.`)

// noInternals fails when a response body shows file paths, Go type names
// or stack traces.
func noInternals(t *testing.T, body string) {
	t.Helper()
	if m := internals.FindString(body); m != "" {
		t.Errorf("response body shows internals (%q): %s", m, body)
	}
}

func TestAPIResponses(t *testing.T) {
	c, _, p := newDeployment(t, "")
	d := c.start()
	agg := client(t, p.ca.Cert, tlsCert(p.clientCert, p.clientKey))
	anon := client(t, p.ca.Cert, nil)
	json := "application/json"
	vector, _ := os.ReadFile("../../testdata/reference/example.sig.rs-sha256.b64")
	cases := []struct {
		name, method, path, ct, body string
		c                            *http.Client
		status                       int
		want                         string
	}{
		{"root", "GET", "/", "", "", agg, 200, `{"result":"eIDAS broker"}`},
		{"health without certificate", "GET", "/health", "", "", anon, 200, `{"result":"ok"}`},
		{"health with certificate", "GET", "/health", "", "", agg, 200, `{"result":"ok"}`},
		{"root without certificate", "GET", "/", "", "", anon, 403,
			`{"code":403,"message":"Client certificate required","data":"this endpoint needs a client certificate issued by a CA the broker trusts"}`},
		{"sign without certificate", "POST", "/sign", json, `{}`, anon, 403,
			`{"code":403,"message":"Client certificate required","data":"this endpoint needs a client certificate issued by a CA the broker trusts"}`},
		{"reference vector", "POST", "/sign", json, `{"params":{"data":"a string to sign","key_id":"qseal.key"}}`, agg, 200,
			`{"result":"` + strings.TrimSpace(string(vector)) + `"}`},
		{"unknown path", "GET", "/nope", "", "", agg, 404, `{"detail":"Not Found"}`},
		{"wrong method", "GET", "/sign", "", "", agg, 405, `{"detail":"Method Not Allowed"}`},
		{"missing field", "POST", "/sign", json, `{"params":{"data":"x"}}`, agg, 422,
			`{"detail":[{"type":"missing","loc":["body","params","key_id"],"msg":"Field required","input":{"data":"x"}}]}`},
		{"bad enum", "POST", "/sign", json, `{"params":{"data":"x","key_id":"qseal.key","hash_algorithm":"SHA1"}}`, agg, 422,
			`{"detail":[{"type":"enum","loc":["body","params","hash_algorithm"],"msg":"Input should be 'SHA256' or 'SHA512'","input":"SHA1","ctx":{"expected":"'SHA256' or 'SHA512'"}}]}`},
		{"params missing", "POST", "/sign", json, `{}`, agg, 422,
			`{"detail":[{"type":"missing","loc":["body","params"],"msg":"Field required","input":{}}]}`},
		{"empty body", "POST", "/sign", json, ``, agg, 422,
			`{"detail":[{"type":"missing","loc":["body"],"msg":"Field required","input":null}]}`},
		{"malformed JSON", "POST", "/sign", json, `{"params":`, agg, 422,
			`{"detail":[{"type":"json_invalid","loc":["body",10],"msg":"JSON decode error","input":{},"ctx":{"error":"Expecting value"}}]}`},
		{"not JSON", "POST", "/sign", "text/plain", `hello`, agg, 422,
			`{"detail":[{"type":"model_attributes_type","loc":["body"],"msg":"Input should be a valid dictionary or object to extract fields from","input":"hello"}]}`},
		{"not UTF-8", "POST", "/sign", json, "{\"params\":\"\xff\"}", agg, 400, `{"detail":"There was an error parsing the body"}`},
		{"unknown key", "POST", "/sign", json, `{"params":{"data":"x","key_id":"nope.key"}}`, agg, 403,
			`{"code":403,"message":"Forbidden","data":"client CN=agg-1 may not use key \"nope.key\" for sign"}`},
		{"key allowed through its alias", "POST", "/sign", json, `{"params":{"data":"x","key_id":"ec.key"}}`, agg, 200, ""},
		{"key not allowed", "POST", "/sign", json, `{"params":{"data":"x","key_id":"denied.key"}}`, agg, 403,
			`{"code":403,"message":"Forbidden","data":"client CN=agg-1 may not use key \"denied.key\" for sign"}`},
		{"reserved key", "POST", "/sign", json, `{"params":{"data":"x","key_id":"brokerd:tls-server"}}`, agg, 403,
			`{"code":403,"message":"Forbidden","data":"client CN=agg-1 may not use key \"brokerd:tls-server\" for sign"}`},
		{"incompatible algorithm", "POST", "/sign", json, `{"params":{"data":"x","key_id":"rsa.key","crypto_algorithm":"ES"}}`, agg, 400,
			`{"code":400,"message":"Algorithm incompatible with key","data":"Algorithm ES is incompatible with key type RSA"}`},
		{"incompatible algorithm EC", "POST", "/sign", json, `{"params":{"data":"x","key_id":"ec-alias","crypto_algorithm":"PS"}}`, agg, 400,
			`{"code":400,"message":"Algorithm incompatible with key","data":"Algorithm PS is incompatible with key type EC P-256"}`},
		{"body too large", "POST", "/sign", json, strings.Repeat(" ", 1<<20+1), agg, 413,
			`{"code":413,"message":"Request body too large","data":"the limit is 1048576 bytes"}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, tc.c, tc.method, d.url(tc.path), tc.ct, tc.body)
			if r.status != tc.status || (tc.want != "" && r.body != tc.want) {
				t.Fatalf("%d %s\nwant %d %s", r.status, r.body, tc.status, tc.want)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if r.header.Get("X-Request-Id") == "" {
				t.Error("no X-Request-Id")
			}
		})
	}
	if r := do(t, agg, "DELETE", d.url("/sign"), "", ""); r.header.Get("Allow") != "POST" {
		t.Errorf("405 Allow header %q", r.header.Get("Allow"))
	}
	if r := do(t, agg, "POST", d.url("/sign/"), json, `{}`); r.status != 200 && r.status != 422 {
		t.Errorf("trailing slash: %d %s (the redirect should lead to /sign)", r.status, r.body)
	}
	// ES is raw r||s of 64 bytes for P-256, through an alias.
	r := do(t, agg, "POST", d.url("/sign"), json, `{"params":{"data":"x","key_id":"ec-alias","hash_algorithm":"SHA512"}}`)
	var sig string
	fmt.Sscanf(r.body, `{"result":%q}`, &sig)
	if raw, err := base64.StdEncoding.DecodeString(sig); r.status != 200 || err != nil || len(raw) != 64 {
		t.Fatalf("ES through the alias: %d %s", r.status, r.body)
	}
	// Only the keys the client may use are listed, with their thumbprints.
	r = do(t, agg, "GET", d.url("/keys"), "", "")
	if r.status != 200 || !strings.Contains(r.body, `"id":"qseal.key"`) || !strings.Contains(r.body, `"id":"ec.key"`) ||
		strings.Contains(r.body, "brokerd:tls-server") {
		t.Fatalf("/keys: %d %s", r.status, r.body)
	}
	r = do(t, agg, "GET", d.url("/openapi.json"), "", "")
	if r.status != 200 || !strings.Contains(r.body, `"enum": [
          "RS",
          "PS",
          "ES"`) || !strings.Contains(r.body, `"/keys"`) {
		t.Fatalf("/openapi.json: %d %.200s", r.status, r.body)
	}
	// Neither the data nor a signature reaches the log; the data's digest does.
	logs := d.logs.String()
	if strings.Contains(logs, "a string to sign") || strings.Contains(logs, strings.TrimSpace(string(vector))[:40]) {
		t.Error("the log holds request data or a signature")
	}
	if !strings.Contains(logs, "data_sha256=302094c5159753560a05077118a3df1d6d294c95a63d5b80a62f3a03461d6150") {
		t.Error("the log lacks the digest of the signed data")
	}
}
