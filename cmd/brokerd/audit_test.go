package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
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

	"github.com/brokerd/brokerd/internal/testpki"
)

type exported struct {
	Seq          uint64    `json:"seq"`
	Time         time.Time `json:"time"`
	Op           string    `json:"op"`
	RequestID    string    `json:"request_id"`
	Client       string    `json:"client"`
	ClientSHA256 string    `json:"client_sha256"`
	KeyID        string    `json:"key_id"`
	DataSHA256   string    `json:"data_sha256"`
	Status       int       `json:"status"`
	Error        string    `json:"error"`
	Detail       string    `json:"detail"`
}

func (c *cli) export(args ...string) []exported {
	c.t.Helper()
	var out []exported
	sc := bufio.NewScanner(strings.NewReader(c.must(append([]string{"audit", "export"}, args...)...)))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r exported
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			c.t.Fatalf("export line %q: %v", sc.Text(), err)
		}
		out = append(out, r)
	}
	return out
}

// TestAuditEndToEnd: the audit commands of the command line, through the
// admin socket while the daemon runs (on the live log; the file itself is
// the daemon's) and on the state file once it stopped. (What the records
// hold is the daemon package's TestAuditRecordsAndShutdown.)
func TestAuditEndToEnd(t *testing.T) {
	t.Parallel()
	c, _, p := newDeployment(t, "")
	pub := filepath.Join(c.dir, "audit.pub")
	c.must("audit", "pubkey", "--out", pub)
	d := c.start()
	agg := client(t, p.ca.Cert, tlsCert(p.clientCert, p.clientKey))
	const data = "a string to sign that must not reach the log"
	r := do(t, agg, "POST", d.url("/sign"), "application/json", `{"params":{"data":"`+data+`","key_id":"qseal.key"}}`)
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	var sig string
	fmt.Sscanf(r.body, `{"result":%q}`, &sig)
	// A client of another CA is refused at the handshake, and recorded.
	rogueCert, rogueKey := testpki.NewCA(t, "Rogue CA").IssueKey(t, testpki.Leaf{Subject: pkix.Name{CommonName: "rogue"}, ExtUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	rogue := client(t, p.ca.Cert, nil)
	rogue.Transport.(*http.Transport).TLSClientConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		return tlsCert(rogueCert, rogueKey), nil
	}
	if _, err := rogue.Get(d.url("/")); err == nil {
		t.Fatal("the rogue client got through")
	}
	if out := c.must("audit", "verify", "--pub", pub); !strings.HasSuffix(strings.TrimSpace(out), "ok") {
		t.Fatalf("live verify:\n%s", out)
	}
	if live := c.must("audit", "export"); !strings.Contains(live, `"op":"handshake"`) {
		t.Fatalf("live export lacks the handshake record:\n%s", live)
	}
	c.fail(1, "is held by another process", "audit", "verify", "--pub", pub, "--db", filepath.Join(c.dir, "etc", "state", "brokerd.db"))
	stop(t, d)
	testAuditAfterStop(t, c, pub)
	// Neither the data nor the signature is in the export; the digest is.
	export := c.must("audit", "export")
	rawSig, _ := base64.StdEncoding.DecodeString(sig)
	for what, needle := range map[string][]byte{"the data": []byte(data), "the signature (base64)": []byte(sig[:32]), "the signature": rawSig[:32]} {
		if bytes.Contains([]byte(export), needle) {
			t.Errorf("the export contains %s", what)
		}
	}
	if digest := sha256.Sum256([]byte(data)); !strings.Contains(export, hex.EncodeToString(digest[:])) {
		t.Error("the data's SHA-256 is missing from the export")
	}
}

// testAuditAfterStop: audit verify and export of a stopped daemon's state:
// everything signed, as many records exported as verified, the records of
// the commands and of the daemon there.
func testAuditAfterStop(t *testing.T, c *cli, pub string) {
	t.Helper()
	out := c.must("audit", "verify", "--pub", pub)
	if !strings.Contains(out, "ok") || strings.Contains(out, "not signed yet") {
		t.Fatalf("verify after a clean stop:\n%s", out)
	}
	var rep struct {
		Records     int    `json:"records"`
		Checkpoints int    `json:"checkpoints"`
		Problem     string `json:"problem"`
	}
	if err := json.Unmarshal([]byte(c.must("audit", "verify", "--pub", pub, "--json")), &rep); err != nil || rep.Problem != "" || rep.Checkpoints < 2 {
		t.Fatalf("verify --json: %+v %v", rep, err)
	}
	recs := c.export()
	if len(recs) != rep.Records {
		t.Fatalf("export has %d records, verify counted %d", len(recs), rep.Records)
	}
	testExportWindow(t, c, recs)
	ops := map[string]bool{}
	for _, r := range recs {
		ops[r.Op] = true
	}
	for _, op := range []string{"admin.key.import", "admin.key.create", "daemon.start", "daemon.stop", "sign", "handshake"} {
		if !ops[op] {
			t.Errorf("no %s record in %+v", op, recs)
		}
	}
}

// testExportWindow checks --since (included) and --until (excluded)
// against the full export, and the refusals of bad flags.
func testExportWindow(t *testing.T, c *cli, all []exported) {
	t.Helper()
	mid := all[len(all)/2].Time
	at := mid.Format(time.RFC3339Nano)
	since, until := c.export("--since", at), c.export("--until", at)
	if len(since)+len(until) != len(all) || len(since) == 0 || len(until) == 0 {
		t.Fatalf("--since %s: %d records, --until: %d, of %d", at, len(since), len(until), len(all))
	}
	for _, r := range since {
		if r.Time.Before(mid) {
			t.Errorf("--since %s gave record %d of %s", at, r.Seq, r.Time)
		}
	}
	for _, r := range until {
		if !r.Time.Before(mid) {
			t.Errorf("--until %s gave record %d of %s", at, r.Seq, r.Time)
		}
	}
	if got := c.export("--since", "2000-01-01", "--until", "2000-01-02"); len(got) != 0 {
		t.Errorf("a day without records gave %d", len(got))
	}
	c.fail(2, "only jsonl", "audit", "export", "--format", "csv")
	c.fail(2, "want 2026-03-01", "audit", "export", "--since", "last march")
	c.fail(1, "no PEM public key", "audit", "verify", "--pub", c.config)
}

func TestAuditSurvivesSIGKILL(t *testing.T) {
	t.Parallel()
	c, _, p := newDeployment(t, "")
	pub := filepath.Join(c.dir, "audit.pub")
	c.must("audit", "pubkey", "--out", pub)
	d := c.start()
	var (
		mu     sync.Mutex
		ids    []string // request ids of every 200 the clients received
		wg     sync.WaitGroup
		enough = make(chan struct{}) // closed at the 60th
	)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := client(t, p.ca.Cert, tlsCert(p.clientCert, p.clientKey))
			cl.Timeout = 5 * time.Second
			for i := 0; ; i++ {
				key := []string{"rsa.key", "ec.key", "qseal.key"}[(w+i)%3]
				resp, err := cl.Post(d.url("/sign"), "application/json", strings.NewReader(fmt.Sprintf(`{"params":{"data":"%d-%d","key_id":%q}}`, w, i, key)))
				if err != nil {
					return // the daemon is gone
				}
				io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					mu.Lock()
					if ids = append(ids, resp.Header.Get("X-Request-Id")); len(ids) == 60 {
						close(enough)
					}
					mu.Unlock()
				}
			}
		}()
	}
	select {
	case <-enough: // killed amid a stream of signatures
	case <-time.After(30 * time.Second):
		t.Fatal("60 signatures took more than 30s")
	}
	d.kill()
	wg.Wait()
	if len(ids) < 60 {
		t.Fatalf("only %d signatures before the kill", len(ids))
	}
	// Restarted, the log verifies and holds every answered request.
	d = c.start()
	stop(t, d)
	if out := c.must("audit", "verify", "--pub", pub); !strings.HasSuffix(strings.TrimSpace(out), "ok") {
		t.Fatalf("verify after SIGKILL:\n%s", out)
	}
	recorded := map[string]bool{}
	for _, r := range c.export() {
		if r.Op == "sign" && r.Status == 200 {
			recorded[r.RequestID] = true
		}
	}
	for _, id := range ids {
		if !recorded[id] {
			t.Errorf("request %s got a signature but has no audit record", id)
		}
	}
	t.Logf("%d signatures answered before SIGKILL, all recorded", len(ids))
}

// TestAuditAdminChanges: changes to the policy and the bank CAs are on
// record with who made them, whether the daemon runs (the command comes
// through the admin socket and the daemon reloads at once, on record with
// what is now in force) or not, and so are SIGHUP reloads.
func TestAuditAdminChanges(t *testing.T) {
	t.Parallel()
	c, _, p := newDeployment(t, "")
	c.must("policy", "allow", "--name", "offline", "--cn", "someone", "--keys", "rsa.key", "--ops", "sign")
	c.must("trust", "add", "--ca", p.caFile)
	fp := sha256.Sum256(p.ca.Cert.Raw)
	d := c.start()
	c.must("policy", "remove", "--name", "offline")
	d.waitLog("policy loaded", 2)
	d.cmd.Process.Signal(syscall.SIGHUP)
	d.waitNotify("RELOADING=1")
	d.waitNotify("READY=1")
	stop(t, d)

	policyData, _ := os.ReadFile(filepath.Join(c.dir, "etc", "policy.toml"))
	policySum := sha256.Sum256(policyData)
	type seen struct{ op, client, detail string }
	var got []seen
	for _, r := range c.export() {
		if strings.HasPrefix(r.Op, "admin.policy") || strings.HasPrefix(r.Op, "admin.trust") || r.Op == "admin.tls.reload" {
			got = append(got, seen{r.Op, r.Client, r.Detail})
		}
	}
	wantOps := []struct{ op, client, detail string }{
		{"admin.policy.allow", "local user", `"name":"agg"`}, // from newDeployment
		{"admin.policy.allow", "local user", `"name":"offline"`},
		{"admin.trust.add", "local user", "sha256 " + hex.EncodeToString(fp[:]) + " for every bank"},
		{"admin.policy.loaded", "daemon", "2 rules from "},
		{"admin.trust.loaded", "daemon", "1 bank CAs from " + filepath.Join(c.dir, "etc", "bank-cas") + " " + hex.EncodeToString(fp[:])},
		// Through the admin socket: the caller, then the reload at once.
		{"admin.policy.remove", "local user root (uid 0), pid ", "rule offline"},
		{"admin.policy.reload", "daemon", "1 rules from "},
		{"admin.tls.reload", "daemon", "server certificate "},
		{"admin.policy.reload", "daemon", "(sha256 " + hex.EncodeToString(policySum[:]) + ")"},
		{"admin.trust.reload", "daemon", "1 bank CAs"},
	}
	if len(got) != len(wantOps) {
		t.Fatalf("admin records %+v\nwant %+v", got, wantOps)
	}
	for i, w := range wantOps {
		if got[i].op != w.op || !strings.HasPrefix(got[i].client, w.client) || !strings.Contains(got[i].detail, w.detail) {
			t.Errorf("record %d: %+v, want %+v", i, got[i], w)
		}
	}
	if out := c.must("audit", "verify"); !strings.HasSuffix(strings.TrimSpace(out), "ok") {
		t.Fatalf("verify:\n%s", out)
	}
}

// TestAuditSeesTPMStateGoBack: a TPM whose state is restored from an older
// copy (a vTPM's state file, say) has a clock behind the audit log's. The
// daemon says so at start and records it; audit verify fails.
func TestAuditSeesTPMStateGoBack(t *testing.T) {
	t.Parallel()
	c, sw, p := newDeployment(t, "")
	pub := filepath.Join(c.dir, "audit.pub")
	c.must("audit", "pubkey", "--out", pub)
	sw.Stop()
	old := filepath.Join(t.TempDir(), "tpm-state")
	if out, err := exec.Command("cp", "-a", sw.StateDir(), old).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	sw.Restart()
	d := c.start()
	agg := client(t, p.ca.Cert, tlsCert(p.clientCert, p.clientKey))
	time.Sleep(1500 * time.Millisecond) // not ordering: the TPM's clock must move well past the old state's
	if r := do(t, agg, "POST", d.url("/sign"), "application/json", `{"params":{"data":"x","key_id":"qseal.key"}}`); r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	stop(t, d)
	c.must("audit", "verify", "--pub", pub)

	sw.Stop()
	os.RemoveAll(sw.StateDir())
	if out, err := exec.Command("cp", "-a", old, sw.StateDir()).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	sw.Restart()
	d = c.start()
	stop(t, d)
	if !strings.Contains(d.logs.String(), "the TPM's clock is behind the audit log") {
		t.Errorf("the daemon did not notice:\n%s", d.logs)
	}
	// Checkpoint 3 is the second start's: the records it covers depend on
	// how many the daemon's start committed before the checkpointer read
	// the head.
	r := c.run("", "audit", "verify", "--pub", pub)
	if r.code != 1 || !regexp.MustCompile(`^FAILED: checkpoint 3 \(at record \d+, `).MatchString(r.stdout) ||
		!strings.Contains(r.stdout, "without a reset in between: the TPM's state went back") {
		t.Fatalf("verify after the TPM went back: %d\n%s", r.code, r.stdout)
	}
	var noted bool
	for _, rec := range c.export() {
		noted = noted || (rec.Op == "daemon.tpm_clock" && strings.Contains(rec.Error, "went back"))
	}
	if !noted {
		t.Error("no daemon.tpm_clock record")
	}
}
