package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/brokerd/brokerd/internal/certs"
	"github.com/brokerd/brokerd/internal/testpki"
)

func TestClientCertificatesRefused(t *testing.T) {
	c, _, p := newDeployment(t, "")
	d := c.start()
	other := testpki.NewCA(t, "Other CA")
	// The clients send their certificate whatever CAs the server names
	// (Go's client would otherwise withhold one from another CA).
	client := func(issuer *testpki.CA, l testpki.Leaf) *http.Client {
		l.Subject = pkix.Name{CommonName: "agg-1"} // the name policy allows
		cert, key := issuer.IssueKey(t, l)
		cl := clientFor(t, p, nil)
		tc := tlsCert(cert, key)
		cl.Transport.(*http.Transport).TLSClientConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return tc, nil }
		return cl
	}
	cases := map[string]*http.Client{
		"wrong CA":      client(other, testpki.Leaf{ExtUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}),
		"expired":       client(p.ca, testpki.Leaf{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour), ExtUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}),
		"not yet valid": client(p.ca, testpki.Leaf{NotBefore: time.Now().Add(24 * time.Hour), NotAfter: time.Now().Add(48 * time.Hour), ExtUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}),
		"server-only":   client(p.ca, testpki.Leaf{ExtUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}),
	}
	for name, cl := range cases {
		resp, err := cl.Post(d.url("/sign"), "application/json", strings.NewReader(`{"params":{"data":"x","key_id":"qseal.key"}}`))
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			t.Errorf("%s: got %d %s, want a refused handshake", name, resp.StatusCode, body)
			continue
		}
		if !strings.Contains(err.Error(), "certificate") {
			t.Errorf("%s: %v, want a TLS certificate error", name, err)
		}
	}
	// A valid client of the right CA whom no rule names gets 403.
	stranger, key := p.ca.IssueKey(t, testpki.Leaf{Subject: pkix.Name{CommonName: "stranger"}, ExtUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	r := do(t, clientFor(t, p, tlsCert(stranger, key)), "POST", d.url("/sign"), "application/json", `{"params":{"data":"x","key_id":"qseal.key"}}`)
	if r.status != 403 || r.body != `{"code":403,"message":"Forbidden","data":"client CN=stranger may not use key \"qseal.key\" for sign"}` {
		t.Errorf("stranger: %d %s", r.status, r.body)
	}
}

func clientFor(t *testing.T, p *byoPKI, cert *tls.Certificate) *http.Client {
	return client(t, p.ca.Cert, cert)
}

func TestCurlAsInReadme(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl is not installed: run `make test`, which installs it")
	}
	c, _, p := newDeployment(t, "")
	d := c.start()
	curl := func(args ...string) string {
		t.Helper()
		base := []string{"-sS", "--cert", p.certFile, "--key", p.keyFile, "--cacert", p.caFile}
		out, err := exec.Command("curl", append(base, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("curl %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	vector, _ := os.ReadFile("../../testdata/reference/example.sig.rs-sha256.b64")
	port := d.addr[strings.LastIndex(d.addr, ":")+1:]
	base := "https://localhost:" + port
	if got := curl(base + "/"); got != `{"result":"eIDAS broker"}` {
		t.Errorf("GET /: %s", got)
	}
	got := curl("-H", "Content-Type: application/json", "-d", `{"params":{"data":"a string to sign","key_id":"qseal.key","hash_algorithm":"SHA256","crypto_algorithm":"RS"}}`, base+"/sign")
	if got != `{"result":"`+strings.TrimSpace(string(vector))+`"}` {
		t.Errorf("POST /sign: %s", got)
	}
	if got := curl(base + "/health"); got != `{"result":"ok"}` {
		t.Errorf("GET /health: %s", got)
	}
	out, err := exec.Command("curl", "-sS", "--cacert", p.caFile, base+"/").CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"code":403`) {
		t.Errorf("curl without a client certificate: %v %s", err, out)
	}
}

// slowRequest starts a /sign request whose body arrives in two halves, the
// second when release is closed, and reports the answer's status line.
func slowRequest(t *testing.T, d *proc, p *byoPKI, release <-chan struct{}) <-chan string {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(p.ca.Cert)
	conn, err := tls.Dial("tcp", d.addr, &tls.Config{RootCAs: pool, ServerName: "localhost", NextProtos: []string{"http/1.1"},
		Certificates: []tls.Certificate{*tlsCert(p.clientCert, p.clientKey)}})
	if err != nil {
		t.Fatal(err)
	}
	body := `{"params":{"data":"slow","key_id":"qseal.key"}}`
	fmt.Fprintf(conn, "POST /sign HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body[:10])
	out := make(chan string, 1)
	go func() {
		defer conn.Close()
		<-release
		io.WriteString(conn, body[10:])
		line, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil {
			out <- "error: " + err.Error()
			return
		}
		out <- strings.TrimSpace(line)
	}()
	return out
}

func TestReloadAndShutdownKeepRequestsInFlight(t *testing.T) {
	c, _, p := newDeployment(t, "")
	d := c.start()

	// New TLS material: a server certificate from a new CA (same TPM key)
	// and that CA as the client CA.
	newCA := testpki.NewCA(t, "Rotated CA")
	chain, err := certs.ReadFile(c.dir + "/etc/tls/server.crt")
	if err != nil {
		t.Fatal(err)
	}
	oldServer := chain[0]
	newServer := newCA.Issue(t, oldServer.PublicKey, testpki.Leaf{Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"}, ExtUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	newClient, newKey := newCA.IssueKey(t, testpki.Leaf{Subject: pkix.Name{CommonName: "agg-1"}, ExtUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})

	release := make(chan struct{})
	inFlight := slowRequest(t, d, p, release)
	time.Sleep(100 * time.Millisecond) // the request is being read
	os.WriteFile(c.dir+"/etc/tls/server.crt", testpki.CertPEM(newServer), 0o644)
	os.WriteFile(c.dir+"/etc/tls/client-ca.pem", testpki.CertPEM(newCA.Cert), 0o644)
	d.cmd.Process.Signal(syscall.SIGHUP)
	d.waitNotify("RELOADING=1")
	d.waitNotify("READY=1")
	close(release)
	if got := <-inFlight; got != "HTTP/1.1 200 OK" {
		t.Fatalf("request in flight during reload: %q", got)
	}
	// New handshakes use the new material: the old client is refused, the
	// new one served.
	if _, err := client(t, p.ca.Cert, tlsCert(p.clientCert, p.clientKey)).Get(d.url("/")); err == nil {
		t.Fatal("the old server certificate and client CA are still in use after SIGHUP")
	}
	if r := do(t, client(t, newCA.Cert, tlsCert(newClient, newKey)), "GET", d.url("/"), "", ""); r.status != 200 {
		t.Fatalf("after reload: %d %s", r.status, r.body)
	}

	p.ca, p.clientCert, p.clientKey = newCA, newClient, newKey
	// A policy change through the admin socket reloads at once, and the
	// request in flight is served.
	release = make(chan struct{})
	inFlight = slowRequest(t, d, p, release)
	time.Sleep(100 * time.Millisecond)
	c.must("policy", "allow", "--name", "more", "--cn", "agg-2", "--keys", "rsa.key", "--ops", "sign")
	close(release)
	if got := <-inFlight; got != "HTTP/1.1 200 OK" {
		t.Fatalf("request in flight during a policy change: %q", got)
	}

	// SIGTERM waits for the request in flight.
	release = make(chan struct{})
	inFlight = slowRequest(t, d, p, release)
	time.Sleep(100 * time.Millisecond)
	d.cmd.Process.Signal(syscall.SIGTERM)
	d.waitNotify("STOPPING=1")
	close(release)
	if got := <-inFlight; got != "HTTP/1.1 200 OK" {
		t.Fatalf("request in flight during shutdown: %q", got)
	}
	select {
	case err := <-d.exited:
		if err != nil {
			t.Fatalf("brokerd exited with %v", err)
		}
		d.exited <- nil // for the cleanup
	case <-time.After(20 * time.Second):
		t.Fatal("brokerd did not exit after SIGTERM")
	}
}

func TestTPMOutageAnswers503(t *testing.T) {
	c, sw, p := newDeployment(t, "tpm.command_timeout = \"1s\"\ntpm.queue_wait = \"300ms\"\ntpm.queue_depth = 2")
	d := c.start()
	// One HTTP/2 connection, opened before the outage: the server's TLS key
	// is in the TPM too, so new handshakes fail while the TPM is stopped.
	agg := client(t, p.ca.Cert, tlsCert(p.clientCert, p.clientKey))
	agg.Transport.(*http.Transport).ForceAttemptHTTP2 = true
	sign := `{"params":{"data":"x","key_id":"rsa.key"}}`
	if r := do(t, agg, "POST", d.url("/sign"), "application/json", sign); r.status != 200 {
		t.Fatalf("before the outage: %d %s", r.status, r.body)
	}
	sw.Pause()
	var wg sync.WaitGroup
	results := make(chan response, 6)
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results <- do(t, agg, "POST", d.url("/sign"), "application/json", sign)
		}()
	}
	wg.Wait()
	close(results)
	seen := map[string]bool{}
	for r := range results {
		switch r.body {
		case `{"code":503,"message":"TPM unavailable","data":"the TPM does not answer; retry later"}`:
			seen["unavailable"] = r.header.Get("Retry-After") == "5"
		case `{"code":503,"message":"TPM busy","data":"too many operations are waiting for the TPM; retry later"}`:
			seen["busy"] = r.header.Get("Retry-After") == "1"
		default:
			t.Errorf("during the outage: %d %s", r.status, r.body)
		}
	}
	if !seen["unavailable"] || !seen["busy"] {
		t.Errorf("answers with Retry-After seen: %v; want both TPM unavailable and TPM busy", seen)
	}
	if r := do(t, agg, "GET", d.url("/health"), "", ""); r.status != 503 || !strings.Contains(r.body, "the TPM does not answer") {
		t.Errorf("health during the outage: %d %s", r.status, r.body)
	}
	sw.Resume()
	if r := do(t, agg, "POST", d.url("/sign"), "application/json", sign); r.status != 200 {
		t.Fatalf("after the outage: %d %s", r.status, r.body)
	}
	if r := do(t, agg, "GET", d.url("/health"), "", ""); r.status != 200 {
		t.Fatalf("health after the outage: %d %s", r.status, r.body)
	}
}
