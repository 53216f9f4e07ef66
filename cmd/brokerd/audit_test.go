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

func stop(t *testing.T, d *proc) {
	t.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.exited:
		if err != nil {
			t.Fatalf("brokerd exit: %v", err)
		}
		d.exited <- nil
	case <-time.After(30 * time.Second):
		t.Fatal("brokerd did not stop")
	}
}

func TestAuditEndToEnd(t *testing.T) {
	c, _, p := newDeployment(t, "")
	pub := filepath.Join(c.dir, "audit.pub")
	c.must("audit", "pubkey", "--out", pub)
	d := c.start()
	agg := client(t, p.ca.Cert, tlsCert(p.clientCert, p.clientKey))
	data := "a string to sign that must not reach the log"
	r := do(t, agg, "POST", d.url("/sign"), "application/json", `{"params":{"data":"`+data+`","key_id":"qseal.key"}}`)
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	var sig string
	fmt.Sscanf(r.body, `{"result":%q}`, &sig)
	rawSig, _ := base64.StdEncoding.DecodeString(sig)
	do(t, agg, "POST", d.url("/sign"), "application/json", `{"params":{"data":"x","key_id":"denied.key"}}`)
	// A client of another CA is refused at the handshake, and recorded.
	other := testpki.NewCA(t, "Rogue CA")
	rogueCert, rogueKey := other.IssueKey(t, testpki.Leaf{Subject: pkix.Name{CommonName: "rogue"}, ExtUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	rogue := client(t, p.ca.Cert, nil)
	rogue.Transport.(*http.Transport).TLSClientConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		return tlsCert(rogueCert, rogueKey), nil
	}
	if _, err := rogue.Get(d.url("/")); err == nil {
		t.Fatal("the rogue client got through")
	}
	// While the daemon runs, the commands run inside it, on the live log;
	// the file itself is the daemon's.
	if out := c.must("audit", "verify", "--pub", pub); !strings.HasSuffix(strings.TrimSpace(out), "ok") {
		t.Fatalf("live verify:\n%s", out)
	}
	if live := c.must("audit", "export"); !strings.Contains(live, `"op":"handshake"`) {
		t.Fatalf("live export lacks the handshake record:\n%s", live)
	}
	c.fail(1, "is held by another process", "audit", "verify", "--pub", pub, "--db", filepath.Join(c.dir, "etc", "state", "brokerd.db"))
	stop(t, d)

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
	digest := sha256.Sum256([]byte(data))
	want := map[string]bool{"admin.key.import": false, "admin.key.create": false, "daemon.start": false, "daemon.stop": false,
		"sign 200": false, "sign 403": false, "handshake": false}
	for _, rec := range recs {
		switch {
		case rec.Op == "sign" && rec.Status == 200 && rec.DataSHA256 == hex.EncodeToString(digest[:]) && rec.KeyID == "qseal.key" &&
			rec.Client == "CN=agg-1" && len(rec.ClientSHA256) == 64 && rec.RequestID == r.header.Get("X-Request-Id"):
			want["sign 200"] = true
		case rec.Op == "sign" && rec.Status == 403 && strings.Contains(rec.Error, "denied.key"):
			want["sign 403"] = true
		case rec.Op == "handshake" && rec.Client == "CN=rogue" && strings.Contains(rec.Error, "unknown authority"):
			want["handshake"] = true
		default:
			if _, ok := want[rec.Op]; ok {
				want[rec.Op] = true
			}
		}
	}
	for what, seen := range want {
		if !seen {
			t.Errorf("no %s record in %+v", what, recs)
		}
	}

	// Neither the data nor the signature is anywhere: log, state, export.
	export := c.must("audit", "export")
	places := map[string][]byte{"the daemon's log": []byte(d.logs.String()), "the export": []byte(export)}
	filepath.WalkDir(c.dir, func(path string, de os.DirEntry, err error) error {
		if err == nil && !de.IsDir() && strings.HasPrefix(path, filepath.Join(c.dir, "etc")) {
			places[path], _ = os.ReadFile(path)
		}
		return nil
	})
	if _, ok := places[filepath.Join(c.dir, "etc", "state", "brokerd.db")]; !ok {
		t.Fatalf("the state file is not among the places searched: %v", places)
	}
	for where, content := range places {
		for what, needle := range map[string][]byte{"the data": []byte(data), "the signature (base64)": []byte(sig[:32]), "the signature": rawSig[:32]} {
			if bytes.Contains(content, needle) {
				t.Errorf("%s contains %s", where, what)
			}
		}
	}
	if !strings.Contains(d.logs.String(), hex.EncodeToString(digest[:])) || !strings.Contains(export, hex.EncodeToString(digest[:])) {
		t.Error("the data's SHA-256 is missing from the log or the audit records")
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
	c, _, p := newDeployment(t, "")
	pub := filepath.Join(c.dir, "audit.pub")
	c.must("audit", "pubkey", "--out", pub)
	d := c.start()
	var (
		mu  sync.Mutex
		ids []string // request ids of every 200 the clients received
		wg  sync.WaitGroup
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
					ids = append(ids, resp.Header.Get("X-Request-Id"))
					mu.Unlock()
				}
			}
		}()
	}
	time.Sleep(1500 * time.Millisecond)
	d.cmd.Process.Kill()
	wg.Wait()
	<-d.exited
	d.exited <- nil
	if len(ids) < 50 {
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

// TestAuditFailsClosed puts the state on a 4 MiB tmpfs, fills it, and
// checks that /sign answers 503 without a signature until space returns,
// with no restart. It needs root to mount.
func TestAuditFailsClosed(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root; make test runs as root on CI")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount tmpfs here: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })

	c, _, p := newDeploymentIn(t, "audit.min_free = 1048576", filepath.Join(mnt, "state"))
	d := c.start()
	agg := client(t, p.ca.Cert, tlsCert(p.clientCert, p.clientKey))
	sign := func() response {
		return do(t, agg, "POST", d.url("/sign"), "application/json", `{"params":{"data":"x","key_id":"ec.key"}}`)
	}
	if r := sign(); r.status != 200 {
		t.Fatalf("before: %d %s", r.status, r.body)
	}
	filler := filepath.Join(mnt, "filler")
	exec.Command("dd", "if=/dev/zero", "of="+filler, "bs=64k").Run() // until the disk is full
	unavailable := `{"code":503,"message":"Audit log unavailable","data":"no result is returned: the audit record of this operation cannot be written"}`
	got503 := false
	for i := 0; i < 3000 && !got503; i++ {
		r := sign()
		switch {
		case r.status == 503 && r.body == unavailable:
			got503 = true
		case r.status != 200:
			t.Fatalf("disk full: %d %s", r.status, r.body)
		}
	}
	if !got503 {
		t.Fatal("3000 signatures on a full disk, none refused")
	}
	if r := do(t, agg, "GET", d.url("/health"), "", ""); r.status != 503 || !strings.Contains(r.body, "the audit log cannot take records") {
		t.Errorf("health on a full disk: %d %s", r.status, r.body)
	}
	os.Remove(filler)
	if r := sign(); r.status != 200 {
		t.Fatalf("space back, no restart: %d %s", r.status, r.body)
	}
	if r := do(t, agg, "GET", d.url("/health"), "", ""); r.status != 200 {
		t.Errorf("health with space back: %d %s", r.status, r.body)
	}
	stop(t, d)
	if out := c.must("audit", "verify"); !strings.HasSuffix(strings.TrimSpace(out), "ok") {
		t.Fatalf("verify:\n%s", out)
	}
}

// waitLog waits until the daemon's log holds want n times.
func (d *proc) waitLog(want string, n int) {
	d.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(d.logs.String(), want) < n {
		if time.Now().After(deadline) {
			d.t.Fatalf("no %d× %q in the log:\n%s", n, want, d.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAuditAdminChanges: changes to the policy and the bank CAs are on
// record with who made them, whether the daemon runs (the command comes
// through the admin socket and the daemon reloads at once, on record with
// what is now in force) or not, and so are SIGHUP reloads.
func TestAuditAdminChanges(t *testing.T) {
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
	time.Sleep(1500 * time.Millisecond) // the TPM clock moves on
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
	r := c.run("", "audit", "verify", "--pub", pub)
	if r.code != 1 || !strings.HasPrefix(r.stdout, "FAILED: checkpoint 3 (at record 10, ") || !strings.Contains(r.stdout, "without a reset in between: the TPM's state went back") {
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
