package daemon_test

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/brokerd/brokerd/audit"
	"github.com/brokerd/brokerd/config"
	"github.com/brokerd/brokerd/daemon"
	"github.com/brokerd/brokerd/tpm"
)

// TestTPMOutageAnswers503: while the TPM answers nothing, signing answers
// 503 with Retry-After (unavailable, or busy once the queue is full) and
// /health says why; the daemon recovers by itself.
func TestTPMOutageAnswers503(t *testing.T) {
	t.Parallel()
	f := newFixture(t, true)
	s := f.state()
	addKey(t, s, "ec.key", tpm.P256)
	s.Close()
	f.writePolicy(signRule("agg", "agg-1", "ec.key"))
	f.cfg.TPM.CommandTimeout = config.Duration{Duration: time.Second}
	f.cfg.TPM.QueueWait = config.Duration{Duration: 300 * time.Millisecond}
	f.cfg.TPM.QueueDepth = 2
	r, agg := f.start(daemon.Deps{}), f.byoClient("agg-1")
	// A connection per request, opened before the outage: the server's
	// TLS key is in the TPM too, so new handshakes fail while the TPM is
	// stopped.
	clients := make([]*http.Client, 7)
	for i := range clients {
		clients[i] = r.f.client(agg)
		if resp := sign(t, clients[i], r, "ec.key"); resp.status != 200 {
			t.Fatalf("before the outage: %d %s", resp.status, resp.body)
		}
	}
	c := clients[6]
	r.f.sw.Pause()
	// Rounds of six at once until both refusals came: a request meets the
	// stopped TPM (unavailable at the 1 s deadline) unless a command of
	// the daemon's (a self-check ping) met it first and holds the queue
	// (busy at the 300 ms wait budget). A refused connection is held for
	// its Retry-After, at most a second, before its next request.
	seen := map[string]bool{}
	for end := time.Now().Add(waitLimit); (!seen["unavailable"] || !seen["busy"]) && time.Now().Before(end); {
		var wg sync.WaitGroup
		results := make(chan response, 6)
		for _, c := range clients[:6] {
			wg.Go(func() { results <- sign(t, c, r, "ec.key") })
		}
		wg.Wait()
		close(results)
		for resp := range results {
			switch resp.body {
			case `{"code":503,"message":"TPM unavailable","data":"the TPM does not answer; retry later"}`:
				seen["unavailable"] = resp.header.Get("Retry-After") == "5"
			case `{"code":503,"message":"TPM busy","data":"too many operations are waiting for the TPM; retry later"}`:
				seen["busy"] = resp.header.Get("Retry-After") == "1"
			default:
				t.Fatalf("during the outage: %d %s", resp.status, resp.body)
			}
		}
	}
	if !seen["unavailable"] || !seen["busy"] {
		t.Errorf("answers with Retry-After seen: %v; want both TPM unavailable and TPM busy", seen)
	}
	// No command has completed for over a second by now.
	if resp := do(t, c, "GET", r.url("/health"), "", ""); resp.status != 503 || !strings.Contains(resp.body, "the TPM does not answer") {
		t.Errorf("health during the outage: %d %s", resp.status, resp.body)
	}
	r.f.sw.Resume()
	if resp := sign(t, c, r, "ec.key"); resp.status != 200 {
		t.Fatalf("after the outage: %d %s", resp.status, resp.body)
	}
	if resp := do(t, c, "GET", r.url("/health"), "", ""); resp.status != 200 {
		t.Fatalf("health after the outage: %d %s", resp.status, resp.body)
	}
}

// TestAuditFailsClosed puts the state on a 4 MiB tmpfs, fills it, and
// checks that /sign answers 503 without a signature until space returns,
// with no restart. It needs root to mount.
func TestAuditFailsClosed(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root; make test runs as root on CI")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount tmpfs here: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })
	f := newFixtureIn(t, filepath.Join(mnt, "state"))
	f.cfg.Audit.MinFree = 1 << 20 // the least it may keep free; the default is more than the disk
	s := f.state()
	addKey(t, s, "ec.key", tpm.P256)
	s.Close()
	f.writePolicy(signRule("agg", "agg-1", "ec.key"))
	r := f.start(daemon.Deps{})
	agg := f.client(f.byoClient("agg-1"))
	if resp := sign(t, agg, r, "ec.key"); resp.status != 200 {
		t.Fatalf("before: %d %s", resp.status, resp.body)
	}
	filler := filepath.Join(mnt, "filler")
	exec.Command("dd", "if=/dev/zero", "of="+filler, "bs=64k").Run() // until the disk is full
	unavailable := `{"code":503,"message":"Audit log unavailable","data":"no result is returned: the audit record of this operation cannot be written"}`
	got503 := false
	for i := 0; i < 3000 && !got503; i++ {
		resp := sign(t, agg, r, "ec.key")
		switch {
		case resp.status == 503 && resp.body == unavailable:
			got503 = true
		case resp.status != 200:
			t.Fatalf("disk full: %d %s", resp.status, resp.body)
		}
	}
	if !got503 {
		t.Fatal("3000 signatures on a full disk, none refused")
	}
	if resp := do(t, agg, "GET", r.url("/health"), "", ""); resp.status != 503 || !strings.Contains(resp.body, "the audit log cannot take records") {
		t.Errorf("health on a full disk: %d %s", resp.status, resp.body)
	}
	os.Remove(filler)
	// The audit log reads the free space at most every 250 ms: the first
	// signatures after the space came back may still be refused.
	eventually(t, "a signature with space back, no restart", func() bool { return sign(t, agg, r, "ec.key").status == 200 })
	eventually(t, "health with space back", func() bool { return do(t, agg, "GET", r.url("/health"), "", "").status == 200 })
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	if rep, err := audit.VerifyFile(f.cfg.StatePath(), auditPub(t, f.cfg.StatePath())); err != nil || !rep.OK() {
		t.Fatalf("verify: %+v %v", rep, err)
	}
}
