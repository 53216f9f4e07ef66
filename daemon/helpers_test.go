package daemon_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/brokerd/brokerd/audit"
	"github.com/brokerd/brokerd/config"
	"github.com/brokerd/brokerd/daemon"
	"github.com/brokerd/brokerd/internal/certs"
	"github.com/brokerd/brokerd/internal/swtpmtest"
	"github.com/brokerd/brokerd/internal/testpki"
	"github.com/brokerd/brokerd/keys"
	"github.com/brokerd/brokerd/pki"
	"github.com/brokerd/brokerd/policy"
	"github.com/brokerd/brokerd/store"
	"github.com/brokerd/brokerd/tpm"
)

// waitLimit bounds every wait for a signal: a test that gets none fails
// instead of hanging.
const waitLimit = 30 * time.Second

// fixture is a state made by daemon.Init on a swtpm of its own, as `brokerd
// init` makes it: brokerd's own CA with a server certificate for localhost
// and 127.0.0.1, or (byo) a server certificate and client CA of the test's
// PKI, the key in the TPM either way; the API on 127.0.0.1:0.
type fixture struct {
	t   *testing.T
	dir string
	sw  *swtpmtest.TPM
	// cfg is the configuration as loaded; tests change it before start.
	cfg *config.Config
	// ca issues client certificates (bring your own PKI); nil with
	// brokerd's own CA.
	ca *testpki.CA
	// roots is what clients trust: brokerd's CA or the test's.
	roots *x509.Certificate
}

// newFixture runs daemon.Init; byo makes it bring its own PKI.
func newFixture(t *testing.T, byo bool) *fixture {
	t.Helper()
	return initFixture(t, byo, "")
}

// newFixtureIn is a fixture with a PKI of its own and its state in
// stateDir.
func newFixtureIn(t *testing.T, stateDir string) *fixture {
	t.Helper()
	return initFixture(t, true, stateDir)
}

func initFixture(t *testing.T, byo bool, stateDir string) *fixture {
	t.Helper()
	f := &fixture{t: t, dir: t.TempDir(), sw: swtpmtest.Start(t)}
	etc := filepath.Join(f.dir, "etc")
	cfg := config.Default()
	cfg.TPM.Address = f.sw.Address()
	cfg.StateDir = filepath.Join(etc, "state")
	if stateDir != "" {
		cfg.StateDir = stateDir
	}
	cfg.API.Listen = []string{"127.0.0.1:0"}
	cfg.Admin.Socket = filepath.Join(shortDir(t), "admin.sock") // nothing binds it: Deps.Admin is nil
	var tlsIn *daemon.TLSFiles
	if byo {
		f.ca = testpki.NewCA(t, "Test Client CA")
		cert, key := f.ca.IssueKey(t, testpki.Leaf{Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"},
			IPs: []net.IP{net.ParseIP("127.0.0.1")}, ExtUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		tlsIn = &daemon.TLSFiles{Chain: []*x509.Certificate{cert}, Key: key, ClientCAs: []*x509.Certificate{f.ca.Cert}}
		f.roots = f.ca.Cert
	} else {
		cfg.PKI.ServerNames = []string{"localhost", "127.0.0.1"}
	}
	cfgPath := filepath.Join(etc, "brokerd.toml")
	if _, err := daemon.Init(context.Background(), cfgPath, cfg, tlsIn, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("init: %v", err)
	}
	var err error
	if f.cfg, err = config.Load(cfgPath); err != nil {
		t.Fatal(err)
	}
	if !byo {
		f.roots = readCert(t, filepath.Join(etc, "tls", "ca.crt"))
	}
	return f
}

// shortDir is a temporary directory with a short path, for unix sockets
// (108 bytes at most, where t.TempDir has the test's name in it).
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "d")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	cs, err := certs.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return cs[0]
}

// state opens the state while no daemon runs, closed when the test ends.
func (f *fixture) state() *daemon.State {
	f.t.Helper()
	s, err := daemon.OpenState(f.cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(s.Close)
	return s
}

// addKey makes a key in the TPM.
func addKey(t *testing.T, s *daemon.State, id string, alg tpm.Algorithm, aliases ...string) {
	t.Helper()
	if _, _, err := s.Keys.Create(context.Background(), id, alg, keys.CreateOptions{Aliases: aliases}); err != nil {
		t.Fatal(err)
	}
}

// rsaKey is an RSA-2048 key to import, made once per test binary: the TPM
// takes a few hundred milliseconds to make one, its import a few.
var rsaKey = sync.OnceValues(func() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 2048) })

// importRSA imports rsaKey as id.
func importRSA(t *testing.T, s *daemon.State, id string) {
	t.Helper()
	k, err := rsaKey()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Keys.Import(context.Background(), id, k, keys.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
}

// importReference imports the reference RSA-4096 key (sealed: the TPM
// cannot hold it) as id.
func importReference(t *testing.T, s *daemon.State, id string) {
	t.Helper()
	pemData, err := os.ReadFile("../testdata/reference/example.key")
	if err != nil {
		t.Fatal(err)
	}
	priv, err := keys.ParsePrivateKeyPEM(pemData, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Keys.Import(context.Background(), id, priv, keys.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
}

// writePolicy replaces the policy file with rules.
func (f *fixture) writePolicy(rules ...policy.Rule) {
	f.t.Helper()
	p := &policy.Policy{}
	for _, r := range rules {
		if err := p.Put(r); err != nil {
			f.t.Fatal(err)
		}
	}
	if err := p.Save(f.cfg.Policy.File); err != nil {
		f.t.Fatal(err)
	}
}

// signRule lets client cn sign with keys.
func signRule(name, cn string, keys ...string) policy.Rule {
	return policy.Rule{Name: name, CN: cn, Keys: keys, Ops: []string{"sign"}}
}

// running is a daemon of the fixture, serving.
type running struct {
	*daemon.Daemon
	f     *fixture
	addr  string // the API's host:port
	logs  *logRecorder
	notes *notifyRecorder

	cancel   context.CancelFunc
	done     chan error
	stopOnce sync.Once
	stopErr  error
}

// start runs daemon.New and Run with deps (Log, Notify and Ready are the
// test's) and returns once the daemon says it is ready.
func (f *fixture) start(deps daemon.Deps) *running {
	f.t.Helper()
	r := &running{f: f, logs: newLogRecorder(), notes: &notifyRecorder{}, done: make(chan error, 1)}
	ready := make(chan []string, 1)
	deps.Log, deps.Notify, deps.Version = slog.New(r.logs), r.notes.notify, "test"
	deps.Ready = func(addrs []string) { ready <- addrs }
	if deps.WatchInterval == 0 {
		deps.WatchInterval = 20 * time.Millisecond
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	d, err := daemon.New(ctx, f.cfg, deps)
	if err != nil {
		cancel()
		f.t.Fatalf("daemon.New: %v", err)
	}
	// New hardens the process: not dumpable, and all its memory locked
	// when a sealed key is in it. Right for brokerd (TestHarden), wrong
	// for a test binary that runs many daemons under -race (gigabytes).
	unix.Munlockall()
	unix.Prctl(unix.PR_SET_DUMPABLE, 1, 0, 0, 0)
	r.Daemon = d
	go func() { r.done <- d.Run(ctx) }()
	f.t.Cleanup(func() {
		r.stop()
		if f.t.Failed() {
			f.t.Logf("daemon log:\n%s", r.logs)
		}
	})
	select {
	case addrs := <-ready:
		r.addr = addrs[0]
	case err := <-r.done:
		f.t.Fatalf("the daemon ended before it was ready: %v", err)
	case <-time.After(waitLimit):
		f.t.Fatal("the daemon was not ready within 30s")
	}
	return r
}

// stop cancels Run and returns its error, once everything is released.
func (r *running) stop() error {
	r.stopOnce.Do(func() {
		r.cancel()
		select {
		case r.stopErr = <-r.done:
		case <-time.After(waitLimit):
			r.stopErr = fmt.Errorf("Run did not return within %v of its end", waitLimit)
		}
	})
	return r.stopErr
}

func (r *running) url(path string) string { return "https://" + r.addr + path }

// auditPub is the public key of the audit key, read from the state file.
func auditPub(t *testing.T, statePath string) crypto.PublicKey {
	t.Helper()
	st, err := store.Open(statePath, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	pub, err := keys.ReadPublic(st, daemon.AuditKeyID)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// auditRecords returns the audit records of a stopped daemon's state file.
func auditRecords(t *testing.T, statePath string) []audit.Record {
	t.Helper()
	l, _, release, err := audit.OpenFile(statePath, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	var out []audit.Record
	if err := l.Records(time.Time{}, time.Time{}, func(r audit.Record, _ []byte) error { out = append(out, r); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// countOps counts the records of each op.
func countOps(recs []audit.Record) map[string]int {
	n := map[string]int{}
	for _, r := range recs {
		n[r.Op]++
	}
	return n
}

// newClientKey is a client's key.
func newClientKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// issueClient has brokerd's CA (key in the TPM) issue a client certificate.
func issueClient(t *testing.T, s *daemon.State, c pki.Client) *tls.Certificate {
	t.Helper()
	key := newClientKey(t)
	cert, _, err := s.PKI.IssueClient(context.Background(), pki.ClientRequest{Client: c, Key: key.Public()})
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
}

// byoClient is a client certificate of the test's CA for cn.
func (f *fixture) byoClient(cn string) *tls.Certificate {
	f.t.Helper()
	cert, key := f.ca.IssueKey(f.t, testpki.Leaf{Subject: pkix.Name{CommonName: cn}, ExtUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	return &tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
}

// client is an HTTP client trusting the fixture's roots and presenting
// cert (nil: none), whatever CAs the server names. Its connections are
// closed before the daemon stops.
func (f *fixture) client(cert *tls.Certificate) *http.Client {
	c := clientOf(f.roots, cert)
	f.t.Cleanup(c.CloseIdleConnections)
	return c
}

func clientOf(roots *x509.Certificate, cert *tls.Certificate) *http.Client {
	pool := x509.NewCertPool()
	pool.AddCert(roots)
	cfg := &tls.Config{RootCAs: pool, ServerName: "localhost"}
	if cert != nil {
		// Sent whatever CAs the server names: Go's client would keep a
		// certificate of a CA the server does not list to itself.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: waitLimit}
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
	return response{resp.StatusCode, resp.Header, string(b)}
}

// sign posts a sign request for keyID.
func sign(t *testing.T, c *http.Client, r *running, keyID string) response {
	t.Helper()
	return do(t, c, "POST", r.url("/sign"), "application/json", `{"params":{"data":"x","key_id":"`+keyID+`"}}`)
}

// servedCert is the server certificate a new handshake gets.
func servedCert(t *testing.T, r *running) *x509.Certificate {
	t.Helper()
	resp, err := r.f.client(nil).Get(r.url("/health"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.TLS.PeerCertificates[0]
}

// eventually polls cond until it holds, for a state that is read on a
// period (free space, health) and tells nobody when it changes; it fails
// after waitLimit.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(waitLimit); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, waitLimit)
		}
		time.Sleep(20 * time.Millisecond) // a poll with the deadline above, not an ordering
	}
}

// logRecorder is the daemon's log, one line per record, that tests wait
// on.
type logRecorder struct {
	mu      sync.Mutex
	lines   []string
	changed chan struct{} // closed and replaced at every record
	attrs   []slog.Attr
	shared  *logRecorder // the recorder WithAttrs derived this one from
}

func newLogRecorder() *logRecorder {
	l := &logRecorder{changed: make(chan struct{})}
	l.shared = l
	return l
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", r.Level, r.Message)
	add := func(a slog.Attr) bool { fmt.Fprintf(&b, " %s=%v", a.Key, a.Value); return true }
	for _, a := range l.attrs {
		add(a)
	}
	r.Attrs(add)
	s := l.shared
	s.mu.Lock()
	s.lines = append(s.lines, b.String())
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
	return nil
}

func (l *logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &logRecorder{attrs: append(append([]slog.Attr(nil), l.attrs...), as...), shared: l.shared}
}

func (l *logRecorder) WithGroup(string) slog.Handler { return l }

func (l *logRecorder) String() string {
	s := l.shared
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.lines, "\n")
}

// count is the number of lines that contain every one of parts.
func (l *logRecorder) count(parts ...string) (int, <-chan struct{}) {
	s := l.shared
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, line := range s.lines {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			n++
		}
	}
	return n, s.changed
}

// wait waits until n lines contain every one of parts.
func (l *logRecorder) wait(t *testing.T, n int, parts ...string) {
	t.Helper()
	timeout := time.After(waitLimit)
	for {
		got, changed := l.count(parts...)
		if got >= n {
			return
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("the log has %d lines with %q, want %d:\n%s", got, parts, n, l)
		}
	}
}

// notifyRecorder keeps what the daemon tells systemd.
type notifyRecorder struct {
	mu     sync.Mutex
	states []string
}

func (n *notifyRecorder) notify(state string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.states = append(n.states, state)
	return nil
}

// take returns the states told since the last call.
func (n *notifyRecorder) take() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := n.states
	n.states = nil
	return s
}
