package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestCurlAsInReadme(t *testing.T) {
	t.Parallel()
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

// slowRequest starts a /sign request and returns once the daemon's handler
// reads its body: the request says Expect: 100-continue, and the server
// answers 100 Continue when the handler first reads. The body follows when
// release is closed; the answer's status line comes on the channel.
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
	fmt.Fprintf(conn, "POST /sign HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", len(body))
	r := bufio.NewReader(conn)
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	if line, err := r.ReadString('\n'); err != nil || strings.TrimSpace(line) != "HTTP/1.1 100 Continue" {
		t.Fatalf("waiting for 100 Continue: %q %v", line, err)
	}
	r.ReadString('\n') // the blank line after it
	out := make(chan string, 1)
	go func() {
		defer conn.Close()
		<-release
		io.WriteString(conn, body)
		line, err := r.ReadString('\n')
		if err != nil {
			out <- "error: " + err.Error()
			return
		}
		out <- strings.TrimSpace(line)
	}()
	return out
}

// TestReloadAndShutdownKeepRequestsInFlight: SIGHUP reloads (RELOADING=1,
// then READY=1), a policy change through the admin socket reloads at once,
// and SIGTERM drains: a request being read through each is answered.
// (What a reload puts in force is the daemon package's TestReloadAsSIGHUP.)
func TestReloadAndShutdownKeepRequestsInFlight(t *testing.T) {
	t.Parallel()
	c, _, p := newDeployment(t, "")
	d := c.start()

	release := make(chan struct{})
	inFlight := slowRequest(t, d, p, release)
	d.cmd.Process.Signal(syscall.SIGHUP)
	d.waitNotify("RELOADING=1")
	d.waitNotify("READY=1")
	close(release)
	if got := <-inFlight; got != "HTTP/1.1 200 OK" {
		t.Fatalf("request in flight during reload: %q", got)
	}

	release = make(chan struct{})
	inFlight = slowRequest(t, d, p, release)
	c.must("policy", "allow", "--name", "more", "--cn", "agg-2", "--keys", "rsa.key", "--ops", "sign")
	close(release)
	if got := <-inFlight; got != "HTTP/1.1 200 OK" {
		t.Fatalf("request in flight during a policy change: %q", got)
	}

	// SIGTERM waits for the request in flight.
	release = make(chan struct{})
	inFlight = slowRequest(t, d, p, release)
	d.cmd.Process.Signal(syscall.SIGTERM)
	d.waitNotify("STOPPING=1")
	close(release)
	if got := <-inFlight; got != "HTTP/1.1 200 OK" {
		t.Fatalf("request in flight during shutdown: %q", got)
	}
	select {
	case <-d.done:
		if d.err != nil {
			t.Fatalf("brokerd exited with %v", d.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("brokerd did not exit after SIGTERM")
	}
}
