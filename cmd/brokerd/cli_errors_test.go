package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/brokerd/brokerd/internal/swtpmtest"
	"github.com/brokerd/brokerd/internal/testproc"
	"github.com/brokerd/brokerd/tpm"
)

// errCase is one command line and what an operator must see: the exit
// status, and on standard error one line (or none) containing stderr.
type errCase struct {
	name   string
	args   []string
	env    []string // added to the command's environment
	code   int
	stderr string // "" : nothing on standard error
	stdout string // a part of standard output, when set
	not    string // must not appear in either, when set
}

// TestCLIErrors: the messages of mistakes an operator makes name the
// problem and what to do, on one line, without Go's internals; first with
// no daemon running, then through a running daemon's admin socket.
func TestCLIErrors(t *testing.T) {
	t.Parallel()
	c := errorsCLI(t)
	files := errorFixtures(t, c)
	const supported = "supported: RSA 2048/3072/4096, P-256/384/521"
	cases := []errCase{
		{name: "version", args: []string{"--version"}, stdout: "brokerd dev (simulator: "},
		{name: "unknown global flag", args: []string{"--nope", "key", "list"}, code: 2, stderr: "brokerd: unknown flag --nope (see brokerd --help)", not: "Usage"},
		{name: "unknown command flag", args: []string{"key", "list", "--nope"}, code: 2, stderr: "brokerd key list: unknown flag --nope (see brokerd key list --help)", not: "Usage"},
		{name: "rate time", args: []string{"tpm", "info", "--rate-time", "0s"}, code: 2, stderr: "--rate-time must be positive (use --no-rates to measure none)"},
		{name: "operands", args: []string{"client", "revoke", "a", "b"}, code: 2, stderr: "want one argument after the flags, got 2", not: "(s)"},
		{name: "no CSR", args: []string{"client", "sign", "--csr", files["text"], "--name", "a", "--out", c.path("a.crt")}, code: 1,
			stderr: files["text"] + ": not a certificate signing request (PEM or DER)", not: "asn1"},
		{name: "a certificate for a CSR", args: []string{"client", "sign", "--csr", files["cert"], "--name", "a", "--out", c.path("a.crt")}, code: 1,
			stderr: "not a certificate signing request (PEM or DER): the PEM holds CERTIFICATE"},
		{name: "Ed25519", args: []string{"key", "import", "--id", "ed", "--key", files["ed25519"]}, code: 1, stderr: "unsupported key type Ed25519: " + supported, not: "ed25519."},
		{name: "secp256k1", args: []string{"key", "import", "--id", "k1", "--key", files["secp256k1"]}, code: 1, stderr: "unsupported key type EC secp256k1: " + supported, not: "x509"},
		{name: "P-521 wrapped", args: []string{"key", "wrap", "--ek", files["cert"], "--key", files["p521"], "--out", c.path("w.blob")}, code: 1,
			stderr: "EC P-521 keys do not fit in a TPM; import the key on the appliance instead, where it is sealed"},
		{name: "RSA-1024", args: []string{"key", "wrap", "--ek", files["cert"], "--key", files["rsa1024"], "--out", c.path("w.blob")}, code: 1, stderr: "unsupported key type RSA-1024: " + supported},
		{name: "no blob", args: []string{"key", "import", "--id", "b", "--blob", files["text"]}, code: 1, stderr: "not a wrapped key made by brokerd key wrap", not: "invalid character"},
		{name: "DER key", args: []string{"key", "import", "--id", "der.key", "--key", files["der"]}, stdout: "imported key der.key (imported, p256)"},
		{name: "no key in the PEM", args: []string{"key", "import", "--id", "x", "--key", files["cert"]}, code: 1, stderr: "no PEM private key found (the PEM holds CERTIFICATE)"},
		{name: "no password", args: []string{"key", "import", "--id", "qwac.key", "--key", files["encrypted"]}, code: 1,
			stderr: "qwac.key: the key is encrypted: no password given: give --password-file FILE, set QWAC_KEY_PASSWORD, or run brokerd on a terminal to be asked"},
		{name: "no password for init", args: []string{"init", "--dir", c.path("etc2"), "--tpm", "swtpm:/nowhere", "--tls-cert", files["cert"], "--tls-key", files["encrypted"], "--client-ca", files["cert"]}, code: 1,
			stderr: "give --tls-key-password-file FILE, set QWAC_KEY_PASSWORD"},
		{name: "an EC", args: []string{"key", "sign", "--id", "der.key", "--alg", "RS"}, code: 1, stderr: "RS with an EC P-256 key"},
		{name: "unknown key in a rule", args: []string{"policy", "allow", "--name", "r", "--cn", "ok", "--keys", "der.key,nosuch.key,*", "--ops", "sign"},
			stdout: "rule r saved", stderr: `warning: no key is called "nosuch.key" (yet): brokerd key list shows the keys`},
		{name: "issue ok", args: []string{"client", "issue", "--name", "ok", "--out", c.path("clients")}, stdout: "wrote "},
		{name: "allow", args: []string{"policy", "test", "--cert", c.path("clients/ok.crt"), "--op", "sign", "--key", "der.key"}, stdout: "allow: rule \"r\""},
		{name: "deny exits 1", args: []string{"policy", "test", "--cert", c.path("clients/ok.crt"), "--op", "makeRequest", "--key", "der.key"}, code: 1,
			stdout: "deny: ", stderr: "brokerd policy test: denied"},
		{name: "issue rev", args: []string{"client", "issue", "--name", "rev", "--out", c.path("clients")}, stdout: "wrote "},
		{name: "revoke", args: []string{"client", "revoke", "rev"}, stdout: `revoked client "rev"`},
		{name: "revoke twice", args: []string{"client", "revoke", "rev"}, code: 1, stderr: `client "rev" (serial `, not: "not found"},
		{name: "revoked", args: []string{"policy", "test", "--cert", c.path("clients/rev.crt"), "--op", "sign", "--key", "der.key"}, code: 1,
			stdout: "deny: certificate revoked: client certificate (serial ", stderr: "brokerd policy test: denied"},
		{name: "out into a missing directory", args: []string{"client", "sign", "--csr", files["csr"], "--name", "lost", "--out", c.path("nowhere/lost.crt")}, code: 1,
			stderr: "cannot write " + c.path("nowhere/lost.crt") + ": directory " + c.path("nowhere") + " does not exist (no certificate issued)"},
		{name: "nothing issued", args: []string{"client", "list"}, not: "lost"},
		{name: "DER CSR", args: []string{"client", "sign", "--csr", files["csr.der"], "--name", "der-client", "--out", c.path("der-client.crt")}, stdout: `client "der-client"`},
		{name: "CSR out into a missing directory", args: []string{"key", "create", "--id", "lost.key", "--alg", "p256", "--csr-out", c.path("nowhere/k.csr")}, code: 1,
			stderr: "directory " + c.path("nowhere") + " does not exist"},
		{name: "no key created", args: []string{"key", "list"}, not: "lost.key"},
		{name: "no daemon yet", args: []string{"--config", c.path("missing.toml"), "key", "list"}, code: 1, stderr: "config: open " + c.path("missing.toml")},
	}
	c.checkAll(cases)
	c.checkRevokedTwice()
	c.checkPolicyTestJSON()
	c.checkThroughDaemon(files)
}

// checkThroughDaemon makes the same mistakes through a running daemon:
// the commands run in it, with the caller's files and no terminal.
func (c *cli) checkThroughDaemon(files map[string]string) {
	c.t.Helper()
	stop := c.serveForErrors()
	defer stop()
	c.checkAll([]errCase{
		{name: "daemon: no password", args: []string{"key", "import", "--id", "qwac.key", "--key", files["encrypted"]}, code: 1,
			stderr: "no password given: give --password-file FILE, set QWAC_KEY_PASSWORD, or run brokerd on a terminal to be asked"},
		{name: "daemon: revoked", args: []string{"policy", "test", "--cert", c.path("clients/rev.crt"), "--op", "sign", "--key", "der.key"}, code: 1,
			stdout: "deny: certificate revoked", stderr: "brokerd policy test: denied"},
		{name: "daemon: revoke twice", args: []string{"client", "revoke", "rev"}, code: 1, stderr: "is already revoked"},
		{name: "daemon: out into a missing directory", args: []string{"client", "sign", "--csr", files["csr"], "--name", "lost", "--out", c.path("nowhere/lost.crt")}, code: 1,
			stderr: "directory " + c.path("nowhere") + " does not exist (no certificate issued)"},
		{name: "daemon: nothing issued", args: []string{"client", "list"}, not: "lost"},
		{name: "daemon: unknown key in a rule", args: []string{"policy", "allow", "--name", "r2", "--cn", "ok", "--keys", "other.key", "--ops", "sign"},
			stdout: "rule r2 saved", stderr: `warning: no key is called "other.key" (yet)`},
		{name: "daemon: no blob", args: []string{"key", "import", "--id", "b", "--blob", files["text"]}, code: 1, stderr: "not a wrapped key made by brokerd key wrap"},
		{name: "daemon: sign with the CA key", args: []string{"key", "sign", "--id", "brokerd:ca"}, code: 1,
			stderr: `brokerd key sign: "brokerd:ca" is brokerd's own key: it is used only by brokerd itself`},
		{name: "daemon: delete the audit key", args: []string{"key", "delete", "--id", "brokerd:audit"}, code: 1, stderr: `"brokerd:audit" is brokerd's own key`},
		{name: "daemon: replace the server certificate", args: []string{"key", "cert", "--id", "brokerd:tls-server", "--cert", files["cert"]}, code: 1,
			stderr: `"brokerd:tls-server" is brokerd's own key`},
		{name: "daemon: sign", args: []string{"key", "sign", "--id", "der.key"}},
	})
	// An operator's signature is on record like a client's, and so is the
	// refused one with the CA key.
	export := c.must("audit", "export")
	for _, want := range []string{`"op":"admin.key.sign","client":"local user`, `"key_id":"der.key","alg":"ES/SHA256","data_sha256":"e3b0c442`,
		`"key_id":"brokerd:ca"`} {
		if !strings.Contains(export, want) {
			c.t.Errorf("the audit log lacks %s:\n%s", want, export)
		}
	}
	// They ran in the daemon: its record of rule r2 names the caller's
	// process, as the admin socket's peer.
	lines := strings.Split(c.must("audit", "export"), "\n")
	if !slices.ContainsFunc(lines, func(l string) bool {
		return strings.Contains(l, `"op":"admin.policy.allow"`) && strings.Contains(l, `\"name\":\"r2\"`) && strings.Contains(l, ", pid ")
	}) {
		c.t.Errorf("rule r2 was not recorded by the daemon for its caller:\n%s", strings.Join(lines, "\n"))
	}
}

// errorsCLI initialises brokerd (its own CA) on a fresh swtpm, its API on
// a free loopback port.
func errorsCLI(t *testing.T) *cli {
	t.Helper()
	sw := swtpmtest.Start(t)
	c := &cli{t: t, dir: t.TempDir()}
	c.config = filepath.Join(c.dir, "etc", "brokerd.toml")
	c.must("init", "--dir", filepath.Join(c.dir, "etc"), "--tpm", sw.Address(), "--listen", "127.0.0.1:0", "--admin-socket", c.adminSocket())
	return c
}

func (c *cli) path(name string) string { return filepath.Join(c.dir, name) }

// errorFixtures writes the files the cases give brokerd.
func errorFixtures(t *testing.T, c *cli) map[string]string {
	t.Helper()
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	edDER, _ := x509.MarshalPKCS8PrivateKey(edKey)
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p256DER, _ := x509.MarshalPKCS8PrivateKey(p256)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "lost"}}, p256)
	f := map[string]string{
		"text":      c.file("hello.txt", []byte("hello\n")),
		"cert":      filepath.Join(c.dir, "etc", "tls", "ca.crt"),
		"ed25519":   c.file("ed.key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: edDER})),
		"der":       c.file("k.der", p256DER),
		"csr":       c.file("lost.csr", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr})),
		"csr.der":   c.file("lost.der", csr),
		"secp256k1": c.path("k1.key"),
		"rsa1024":   c.path("rsa1024.key"),
		"p521":      c.path("p521.key"),
		"encrypted": c.path("qwac.key"),
	}
	mustOpenSSL(t, nil, "ecparam", "-name", "secp256k1", "-genkey", "-noout", "-out", f["secp256k1"])
	mustOpenSSL(t, nil, "genrsa", "-out", f["rsa1024"], "1024")
	mustOpenSSL(t, nil, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-521", "-out", f["p521"])
	mustOpenSSL(t, nil, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-aes-256-cbc", "-pass", "pass:s3cret", "-out", f["encrypted"])
	return f
}

// checkAll runs the cases in order (later ones may rely on earlier ones).
func (c *cli) checkAll(cases []errCase) {
	c.t.Helper()
	for _, tc := range cases {
		saved := c.env
		c.env = append(c.env, tc.env...)
		r := c.run("", tc.args...)
		c.env = saved
		stderr := strings.TrimSuffix(r.stderr, "\n")
		switch {
		case r.code != tc.code:
			c.t.Errorf("%s: brokerd %s: exit %d, want %d\nstdout %q\nstderr %q", tc.name, strings.Join(tc.args, " "), r.code, tc.code, r.stdout, r.stderr)
		case strings.Contains(stderr, "\n"):
			c.t.Errorf("%s: more than one line on standard error: %q", tc.name, r.stderr)
		case tc.stderr == "" && stderr != "", !strings.Contains(stderr, tc.stderr):
			c.t.Errorf("%s: stderr %q, want %q", tc.name, r.stderr, tc.stderr)
		case !strings.Contains(r.stdout, tc.stdout):
			c.t.Errorf("%s: stdout %q, want %q", tc.name, r.stdout, tc.stdout)
		case tc.not != "" && strings.Contains(r.stdout+r.stderr, tc.not):
			c.t.Errorf("%s: %q in %q", tc.name, tc.not, r.stdout+r.stderr)
		}
	}
}

// checkRevokedTwice: the second revocation names the serial and the time
// of the first, by name and by serial.
func (c *cli) checkRevokedTwice() {
	c.t.Helper()
	var clients []struct{ Name, Serial, Revoked string }
	json.Unmarshal([]byte(c.must("client", "list", "--json")), &clients)
	i := slices.IndexFunc(clients, func(x struct{ Name, Serial, Revoked string }) bool { return x.Name == "rev" })
	if i < 0 || clients[i].Revoked == "" {
		c.t.Fatalf("client list: %+v", clients)
	}
	at, _ := time.Parse(time.RFC3339, clients[i].Revoked)
	want := `client "rev" (serial ` + clients[i].Serial + ") is already revoked (it was revoked on " + at.UTC().Format(time.RFC3339) + ")"
	for _, which := range []string{"rev", clients[i].Serial} {
		c.checkAll([]errCase{{name: "revoke again by " + which, args: []string{"client", "revoke", which}, code: 1, stderr: want}})
	}
}

// checkPolicyTestJSON: a deny exits 1 and keeps the JSON's shape.
func (c *cli) checkPolicyTestJSON() {
	c.t.Helper()
	shape := func(args ...string) (map[string]any, int) {
		r := c.run("", append([]string{"policy", "test", "--json", "--op", "sign", "--key", "der.key", "--cert"}, args...)...)
		var m map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &m); err != nil {
			c.t.Fatalf("policy test --json: %v\n%s", err, r.stdout)
		}
		return m, r.code
	}
	allow, code := shape(c.path("clients/ok.crt"))
	if code != 0 || allow["allow"] != true {
		c.t.Errorf("allow: exit %d, %v", code, allow)
	}
	deny, code := shape(c.path("clients/rev.crt"))
	if code != 1 || deny["allow"] != false || !strings.HasPrefix(deny["reason"].(string), "certificate revoked") {
		c.t.Errorf("deny: exit %d, %v", code, deny)
	}
	for k := range deny {
		if _, ok := allow[k]; !ok {
			c.t.Errorf("the deny's JSON has %q, the allow's not", k)
		}
	}
	for _, k := range []string{"client", "op", "key", "key_names", "allow", "reason"} {
		if _, ok := deny[k]; !ok {
			c.t.Errorf("the deny's JSON lacks %q: %v", k, deny)
		}
	}
}

// serveForErrors runs brokerd serve until the returned function stops it,
// once it told the notify socket READY=1.
func (c *cli) serveForErrors() (stop func()) {
	c.t.Helper()
	dir, err := os.MkdirTemp("", "notify")
	if err != nil {
		c.t.Fatal(err)
	}
	pc, err := net.ListenPacket("unixgram", filepath.Join(dir, "s"))
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command(brokerdBin, "serve")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "BROKERD_CONFIG=" + c.config, "NOTIFY_SOCKET=" + filepath.Join(dir, "s")}
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	exited, err := testproc.Start(cmd)
	if err != nil {
		c.t.Fatal(err)
	}
	stop = func() {
		cmd.Process.Signal(syscall.SIGTERM)
		<-exited
		pc.Close()
		os.RemoveAll(dir)
	}
	buf := make([]byte, 4096)
	pc.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			stop()
			c.t.Fatalf("brokerd serve sent no READY=1: %v\n%s", err, logs.String())
		}
		if strings.Contains(string(buf[:n]), "READY=1") {
			return stop
		}
	}
}

// TestDemoSaysWhereItListens: the demo's brokerd.toml names the address
// the demo listens on, and a run without --listen listens there. Shipped
// builds have no demo, and say so in one line.
func TestDemoSaysWhereItListens(t *testing.T) {
	t.Parallel()
	c := &cli{t: t, dir: t.TempDir(), config: "/nonexistent/brokerd.toml"}
	if !tpm.SimulatorAvailable {
		c.checkAll([]errCase{{name: "no demo", args: []string{"demo"}, code: 2, stderr: `brokerd: unknown command "demo"`}})
		return
	}
	bin, err := buildBrokerd("brokerd-demo", []string{"CGO_ENABLED=1"}, []string{"-tags", "simulator"})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "demo")
	for _, args := range [][]string{{"--listen", "127.0.0.1:0"}, nil} {
		addr := demoAddr(t, bin, append([]string{"demo", "--dir", dir}, args...))
		toml, err := os.ReadFile(filepath.Join(dir, "brokerd.toml"))
		if err != nil {
			t.Fatal(err)
		}
		if host, _, _ := net.SplitHostPort(addr); host != "127.0.0.1" || !strings.Contains(string(toml), `"127.0.0.1:0"`) || strings.Contains(string(toml), "0.0.0.0") {
			t.Fatalf("demo %v serves on %s; its brokerd.toml:\n%s", args, addr, toml)
		}
	}
}

// demoAddr runs the demo until it logs where its API listens, stops it
// and returns the address.
func demoAddr(t *testing.T, bin string, args []string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	stderr, _ := cmd.StderrPipe()
	exited, err := testproc.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGINT)
		<-exited
	}()
	found := make(chan string, 1)
	go func() {
		var log []string
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			log = append(log, sc.Text())
			if _, a, ok := strings.Cut(sc.Text(), "msg=listening listener=api addr="); ok {
				found <- a
			}
		}
		found <- "exited:\n" + strings.Join(log, "\n")
	}()
	select {
	case addr := <-found:
		if strings.HasPrefix(addr, "exited:") {
			t.Fatalf("demo %v %s", args, addr)
		}
		return addr
	case <-time.After(60 * time.Second):
		t.Fatalf("demo %v did not listen within 60s", args)
	}
	return ""
}
