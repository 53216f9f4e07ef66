package daemon_test

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/brokerd/brokerd/audit"
	"github.com/brokerd/brokerd/daemon"
	"github.com/brokerd/brokerd/internal/testpki"
	"github.com/brokerd/brokerd/tpm"
)

// TestAuditRecordsAndShutdown: every answer and refused handshake is on
// record with who asked, the key, the data's SHA-256 and the outcome; at
// shutdown daemon.stop is the last record and a last checkpoint covers it,
// so the log verifies with nothing unsigned; neither the data nor the
// signature is in the log or the state.
func TestAuditRecordsAndShutdown(t *testing.T) {
	t.Parallel()
	f := newFixture(t, true)
	s := f.state()
	addKey(t, s, "ec.key", tpm.P256)
	addKey(t, s, "denied.key", tpm.P256)
	s.Close()
	f.writePolicy(signRule("agg", "agg-1", "ec.key"))
	r := f.start(daemon.Deps{})
	agg := f.client(f.byoClient("agg-1"))
	const data = "a string to sign that must not reach the log"
	resp := do(t, agg, "POST", r.url("/sign"), "application/json", `{"params":{"data":"`+data+`","key_id":"ec.key"}}`)
	if resp.status != 200 {
		t.Fatalf("%d %s", resp.status, resp.body)
	}
	var sig string
	fmt.Sscanf(resp.body, `{"result":%q}`, &sig)
	sign(t, agg, r, "denied.key")
	// A client of another CA is refused at the handshake, and recorded.
	rogueCert, rogueKey := testpki.NewCA(t, "Rogue CA").IssueKey(t, testpki.Leaf{Subject: pkix.Name{CommonName: "rogue"},
		ExtUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if _, err := f.client(&tls.Certificate{Certificate: [][]byte{rogueCert.Raw}, PrivateKey: rogueKey}).Get(r.url("/")); err == nil {
		t.Fatal("the rogue client got through")
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte(data))
	checkRecords(t, auditRecords(t, f.cfg.StatePath()), hex.EncodeToString(digest[:]), resp.header.Get("X-Request-Id"))
	checkShutdownCheckpoint(t, f.cfg.StatePath())
	rawSig, _ := base64.StdEncoding.DecodeString(sig)
	places := map[string][]byte{"the daemon's log": []byte(r.logs.String())}
	filepath.WalkDir(filepath.Join(f.dir, "etc"), func(path string, de os.DirEntry, err error) error {
		if err == nil && !de.IsDir() {
			places[path], _ = os.ReadFile(path)
		}
		return nil
	})
	if _, ok := places[f.cfg.StatePath()]; !ok {
		t.Fatalf("the state file is not among the places searched: %v", places)
	}
	for where, content := range places {
		for what, needle := range map[string][]byte{"the data": []byte(data), "the signature (base64)": []byte(sig[:32]), "the signature": rawSig[:32]} {
			if bytes.Contains(content, needle) {
				t.Errorf("%s contains %s", where, what)
			}
		}
	}
	if !strings.Contains(r.logs.String(), hex.EncodeToString(digest[:])) {
		t.Error("the data's SHA-256 is missing from the log")
	}
}

// checkRecords finds the records of the signature (its data's digest and
// request id given), the refusal and the rogue handshake, between the
// daemon's start and stop.
func checkRecords(t *testing.T, recs []audit.Record, digest, requestID string) {
	t.Helper()
	want := map[string]bool{"sign 200": false, "sign 403": false, "handshake": false}
	for _, rec := range recs {
		switch {
		case rec.Op == "sign" && rec.Status == 200 && rec.DataSHA256 == digest && rec.KeyID == "ec.key" &&
			rec.Client == "CN=agg-1" && len(rec.ClientSHA256) == 64 && rec.RequestID == requestID:
			want["sign 200"] = true
		case rec.Op == "sign" && rec.Status == 403 && strings.Contains(rec.Error, "denied.key"):
			want["sign 403"] = true
		case rec.Op == "handshake" && rec.Client == "CN=rogue" && strings.Contains(rec.Error, "unknown authority") &&
			strings.HasPrefix(rec.Detail, "refused from 127.0.0.1; possession not proven"):
			want["handshake"] = true
		}
	}
	for what, seen := range want {
		if !seen {
			t.Errorf("no %s record in %+v", what, recs)
		}
	}
	if recs[0].Op != "daemon.start" {
		t.Errorf("first record %+v, want daemon.start", recs[0])
	}
	if last := recs[len(recs)-1]; last.Op != "daemon.stop" {
		t.Errorf("last record %+v, want daemon.stop", last)
	}
}

// checkShutdownCheckpoint: the last checkpoint is the shutdown's, covering
// the last record; the log verifies, with nothing unsigned.
func checkShutdownCheckpoint(t *testing.T, statePath string) {
	t.Helper()
	rep, err := audit.VerifyFile(statePath, auditPub(t, statePath))
	if err != nil || !rep.OK() || rep.Uncovered != 0 || rep.Checkpoints < 2 {
		t.Fatalf("verify: %+v %v", rep, err)
	}
	l, _, release, err := audit.OpenFile(statePath, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	last, err := l.LastCheckpoint()
	if seq, _ := l.Head(); err != nil || last.Reason != "shutdown" || last.Seq != seq {
		t.Fatalf("last checkpoint %+v (%v), want the shutdown's at record %d", last, err, seq)
	}
}
