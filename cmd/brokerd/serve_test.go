package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/brokerd/brokerd/internal/swtpmtest"
	"github.com/brokerd/brokerd/internal/testpki"
	"github.com/brokerd/brokerd/internal/testproc"
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
		"--admin-socket", c.adminSocket()}
	if stateDir != "" {
		args = append(args, "--state-dir", stateDir)
	}
	c.must(args...)
	if extraConfig != "" {
		data, _ := os.ReadFile(c.config)
		os.WriteFile(c.config, []byte(applyConfig(string(data), extraConfig)), 0o640)
	}
	c.must("key", "import", "--id", "qseal.key", "--key", "../../testdata/reference/example.key")
	c.importRSA("rsa.key")
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
	// done is closed once brokerd has exited, with its Wait error in err.
	done chan struct{}
	err  error
}

// syncBuffer is the daemon's standard error, which tests wait on.
type syncBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{} // closed and replaced at every write
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{changed: make(chan struct{})} }

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.changed)
	s.changed = make(chan struct{})
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitLog waits until the daemon's log holds want n times.
func (d *proc) waitLog(want string, n int) {
	d.t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		d.logs.mu.Lock()
		got, changed := strings.Count(d.logs.b.String(), want), d.logs.changed
		d.logs.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-changed:
		case <-timeout:
			d.t.Fatalf("no %d× %q in the log within 30s:\n%s", n, want, d.logs)
		}
	}
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
	d := &proc{t: c.t, logs: newSyncBuffer(), notify: pc, done: make(chan struct{})}
	d.cmd = exec.Command(brokerdBin, "serve")
	d.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "BROKERD_CONFIG=" + c.config, "NOTIFY_SOCKET=" + sock}, c.env...)
	d.cmd.Stdout, d.cmd.Stderr = d.logs, d.logs
	exited, err := testproc.Start(d.cmd)
	if err != nil {
		c.t.Fatal(err)
	}
	go func() { d.err = <-exited; close(d.done) }()
	c.t.Cleanup(func() {
		d.cmd.Process.Kill()
		<-d.done
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

// kill ends brokerd with SIGKILL, as a crash would, and waits for it.
func (d *proc) kill() {
	d.cmd.Process.Kill()
	<-d.done
}

// stop sends SIGTERM and waits for a clean exit.
func stop(t *testing.T, d *proc) {
	t.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
		if d.err != nil {
			t.Fatalf("brokerd exit: %v", d.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("brokerd did not stop")
	}
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
