package audit_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/brokerd/brokerd/audit"
	"github.com/brokerd/brokerd/store"
)

var ctx = context.Background()

// testLog is an audit log and the state file it lives in.
type testLog struct {
	*audit.Log
	st *store.Store
}

// Close closes the log, then its file.
func (l testLog) Close() {
	l.Log.Close()
	l.st.Close()
}

// openLog opens the state file at path and its audit log.
func openLog(path string) (testLog, error) {
	st, err := store.Open(path, store.Options{})
	if err != nil {
		return testLog{}, err
	}
	l, err := audit.Open(st)
	if err != nil {
		st.Close()
		return testLog{}, err
	}
	return testLog{Log: l, st: st}, nil
}

// auditKey stands in for the TPM's audit key: the log only needs a signer.
type auditKey struct {
	key   *ecdsa.PrivateKey
	clock uint64
}

func newAuditKey(t *testing.T) *auditKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &auditKey{key: k, clock: 1000}
}

func (a *auditKey) sign(_ context.Context, payload []byte) ([]byte, error) {
	d := sha256.Sum256(payload)
	return ecdsa.SignASN1(rand.Reader, a.key, d[:])
}

func (a *auditKey) readClock(context.Context) (audit.ClockInfo, error) {
	a.clock += 5000
	return audit.ClockInfo{Clock: a.clock, ResetCount: 3, RestartCount: 1, Safe: true}, nil
}

func appendN(t *testing.T, s testLog, n int, op string) {
	t.Helper()
	for i := 0; i < n; i++ {
		if _, err := s.Append(ctx, audit.Record{Op: op, Status: 200, KeyID: "qseal.key", DataSHA256: fmt.Sprintf("%064x", i)}); err != nil {
			t.Fatal(err)
		}
	}
}

func copyFile(t *testing.T, from string) string {
	t.Helper()
	to := filepath.Join(t.TempDir(), "copy.db")
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	return to
}

// tamper edits a copy's buckets directly, as an attacker with the file would.
func tamper(t *testing.T, path string, fn func(records, cps *bolt.Bucket)) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error {
		fn(tx.Bucket([]byte("audit")), tx.Bucket([]byte("audit_checkpoints")))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func key(n uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, n)
	return b
}

func TestConcurrentAppendsFormOneChain(t *testing.T) {
	t.Parallel()
	s, err := openLog(filepath.Join(t.TempDir(), store.FileName))
	if err != nil {
		t.Fatal(err)
	}
	ak := newAuditKey(t)
	var wg sync.WaitGroup
	seqs := make(chan uint64, 1600)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				seq, err := s.Append(ctx, audit.Record{Op: "sign", Status: 200})
				if err != nil {
					t.Error(err)
					return
				}
				seqs <- seq
			}
		}()
	}
	wg.Wait()
	close(seqs)
	seen := map[uint64]bool{}
	for seq := range seqs {
		if seen[seq] || seq < 1 || seq > 1600 {
			t.Fatalf("sequence %d given twice or out of range", seq)
		}
		seen[seq] = true
	}
	if _, err := s.Checkpoint(ctx, "count", ak.sign, ak.readClock); err != nil {
		t.Fatal(err)
	}
	path := s.st.Path()
	s.Close()
	rep, err := audit.VerifyFile(copyFile(t, path), ak.key.Public())
	if err != nil || !rep.OK() || rep.Records != 1600 || rep.Uncovered != 0 {
		t.Fatalf("report %+v, %v", rep, err)
	}
}

// tamperCase edits a log's buckets and names the problem verify must
// report.
type tamperCase struct {
	name string
	edit func(audit, cps *bolt.Bucket)
	want string
}

// tamperCases are the edits of a log of 23 records, checkpoints after 10
// and 20, that verify must catch.
func tamperCases() []tamperCase {
	return []tamperCase{
		{"a field changed", func(a, _ *bolt.Bucket) {
			v := strings.Replace(string(a.Get(key(5))), `"status":200`, `"status":201`, 1)
			a.Put(key(5), []byte(v))
		}, "record 5 was changed: its hash does not match the link in record 6"},
		{"a signed tail record changed", func(a, _ *bolt.Bucket) {
			v := strings.Replace(string(a.Get(key(20))), `"op":"makeRequest"`, `"op":"sign"`, 1)
			a.Put(key(20), []byte(v))
		}, "record 20 was changed: it does not match the checkpoint"},
		{"a record deleted", func(a, _ *bolt.Bucket) { a.Delete(key(7)) }, "record 7 is missing"},
		{"records deleted", func(a, _ *bolt.Bucket) { a.Delete(key(7)); a.Delete(key(8)) }, "records 7 to 8 are missing"},
		{"records swapped", func(a, _ *bolt.Bucket) {
			x, y := append([]byte(nil), a.Get(key(3))...), append([]byte(nil), a.Get(key(4))...)
			a.Put(key(3), y)
			a.Put(key(4), x)
		}, "the record stored as 3 says it is record 4: records were reordered"},
		{"renumbered after a deletion", func(a, _ *bolt.Bucket) {
			v := strings.Replace(string(a.Get(key(9))), `"seq":9,`, `"seq":8,`, 1)
			a.Delete(key(8))
			a.Delete(key(9))
			a.Put(key(8), []byte(v))
		}, "record 7 was changed: its hash does not match the link in record 8"},
		{"the signed tail truncated", func(a, _ *bolt.Bucket) {
			for n := uint64(15); n <= 23; n++ {
				a.Delete(key(n))
			}
		}, "the log was truncated: it ends at record 14, but a checkpoint signed records up to 20"},
		{"a checkpoint removed", func(_, c *bolt.Bucket) { c.Delete(key(1)) }, "checkpoint 1 (at record 20) does not follow the one before it"},
		{"a checkpoint forged", func(_, c *bolt.Bucket) {
			v := strings.Replace(string(c.Get(key(2))), `"seq":20`, `"seq":23`, 1)
			c.Put(key(2), []byte(v))
		}, "checkpoint 2 (at record 23"},
		{"the first record replaced", func(a, _ *bolt.Bucket) {
			v := strings.Replace(string(a.Get(key(1))), `"prev":"0000`, `"prev":"1111`, 1)
			a.Put(key(1), []byte(v))
		}, "record 1 does not link to the start of the log"},
		{"garbage", func(a, _ *bolt.Bucket) { a.Put(key(2), []byte("{")) }, "record 2 is not a valid record"},
	}
}

// TestVerifyCatchesTampering: every edit of tamperCases, made to a copy of
// a signed log, fails verify with its own problem.
func TestVerifyCatchesTampering(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, store.FileName)
	s, err := openLog(path)
	if err != nil {
		t.Fatal(err)
	}
	ak := newAuditKey(t)
	appendN(t, s, 10, "sign")
	if _, err := s.Checkpoint(ctx, "count", ak.sign, ak.readClock); err != nil { // covers 1..10
		t.Fatal(err)
	}
	appendN(t, s, 10, "makeRequest")
	if _, err := s.Checkpoint(ctx, "count", ak.sign, ak.readClock); err != nil { // covers 1..20
		t.Fatal(err)
	}
	appendN(t, s, 3, "sign") // 21..23, not yet signed
	s.Close()

	rep, err := audit.VerifyFile(copyFile(t, path), ak.key.Public())
	if err != nil || !rep.OK() || rep.Records != 23 || rep.Checkpoints != 2 || rep.Uncovered != 3 {
		t.Fatalf("untouched log: %+v, %v", rep, err)
	}

	for _, c := range tamperCases() {
		t.Run(c.name, func(t *testing.T) {
			cp := copyFile(t, path)
			tamper(t, cp, c.edit)
			rep, err := audit.VerifyFile(cp, ak.key.Public())
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(rep.Problem, c.want) {
				t.Fatalf("problem %q, want %q", rep.Problem, c.want)
			}
		})
	}
	// Another key did not sign these checkpoints.
	rep, _ = audit.VerifyFile(copyFile(t, path), newAuditKey(t).key.Public())
	if !strings.Contains(rep.Problem, "invalid signature") {
		t.Fatalf("other key: %q", rep.Problem)
	}
}

func TestChainContinuesAcrossReopen(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), store.FileName)
	ak := newAuditKey(t)
	for round := 0; round < 3; round++ {
		s, err := openLog(path)
		if err != nil {
			t.Fatal(err)
		}
		appendN(t, s, 5, "sign")
		if _, err := s.Checkpoint(ctx, "shutdown", ak.sign, ak.readClock); err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
	rep, err := audit.VerifyFile(copyFile(t, path), ak.key.Public())
	if err != nil || !rep.OK() || rep.Records != 15 || rep.Checkpoints != 3 {
		t.Fatalf("%+v, %v", rep, err)
	}
	s, _ := openLog(path)
	s.Close()
	if _, err := s.Append(ctx, audit.Record{Op: "sign"}); !errors.Is(err, audit.ErrAudit) {
		t.Fatalf("append after close: %v", err)
	}
}

// TestPruneLeavesASignedAnchor runs in a synctest bubble, for records
// whose times are exactly before and after the cut.
func TestPruneLeavesASignedAnchor(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		path := filepath.Join(t.TempDir(), store.FileName)
		s, err := openLog(path)
		if err != nil {
			t.Fatal(err)
		}
		ak := newAuditKey(t)
		appendN(t, s, 10, "old")
		s.Checkpoint(ctx, "count", ak.sign, ak.readClock)
		time.Sleep(time.Second) // fake time: the records above are before cut
		cut := time.Now()
		time.Sleep(time.Second) // fake time: the records below are after cut
		appendN(t, s, 5, "new")
		s.Checkpoint(ctx, "count", ak.sign, ak.readClock)
		appendN(t, s, 2, "newer")
		n, err := s.Prune(ctx, cut, ak.sign)
		if err != nil || n != 10 {
			t.Fatalf("pruned %d, %v", n, err)
		}
		appendN(t, s, 1, "after")
		s.Close()
		rep, err := audit.VerifyFile(copyFile(t, path), ak.key.Public())
		if err != nil || !rep.OK() || rep.Pruned == nil || rep.FirstSeq != 11 || rep.Records != 8 || rep.Checkpoints != 1 {
			t.Fatalf("after prune: %+v, %v", rep, err)
		}
		// A forged anchor (hiding more records) does not verify.
		cp := copyFile(t, path)
		db, _ := bolt.Open(cp, 0o600, nil)
		db.Update(func(tx *bolt.Tx) error {
			m := tx.Bucket([]byte("audit_meta"))
			var a map[string]any
			json.Unmarshal(m.Get([]byte("anchor")), &a)
			a["first_seq"] = 12
			b, _ := json.Marshal(a)
			return m.Put([]byte("anchor"), b)
		})
		db.Close()
		if rep, _ := audit.VerifyFile(cp, ak.key.Public()); !strings.Contains(rep.Problem, "anchor of pruned records has an invalid signature") {
			t.Fatalf("forged anchor: %q", rep.Problem)
		}
	})
}

// TestAnchorMovesOutOfMeta: state files written before the audit package
// kept the anchor of pruned records in store's meta bucket; they verify
// read-only as they are, and opening them moves the anchor to the log's
// own bucket.
func TestAnchorMovesOutOfMeta(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), store.FileName)
	s, err := openLog(path)
	if err != nil {
		t.Fatal(err)
	}
	ak := newAuditKey(t)
	appendN(t, s, 10, "old")
	s.Checkpoint(ctx, "count", ak.sign, ak.readClock)
	appendN(t, s, 2, "new")
	s.Checkpoint(ctx, "count", ak.sign, ak.readClock)
	if n, err := s.Prune(ctx, time.Now().Add(time.Hour), ak.sign); err != nil || n == 0 {
		t.Fatalf("prune: %d, %v", n, err)
	}
	s.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error { // the old layout
		anchor := append([]byte(nil), tx.Bucket([]byte("audit_meta")).Get([]byte("anchor"))...)
		tx.DeleteBucket([]byte("audit_meta"))
		return tx.Bucket([]byte("meta")).Put([]byte("audit_anchor"), anchor)
	})
	db.Close()
	for _, step := range []string{"read-only, old layout", "after the move"} {
		rep, err := audit.VerifyFile(copyFile(t, path), ak.key.Public())
		if err != nil || !rep.OK() || rep.Pruned == nil {
			t.Fatalf("%s: %+v, %v", step, rep, err)
		}
		s, err := openLog(path)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
	db, _ = bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	defer db.Close()
	db.View(func(tx *bolt.Tx) error {
		if tx.Bucket([]byte("meta")).Get([]byte("audit_anchor")) != nil || tx.Bucket([]byte("audit_meta")).Get([]byte("anchor")) == nil {
			t.Error("the anchor was not moved to audit_meta")
		}
		return nil
	})
}

// TestVerifyTPMClock: the clocks in successive checkpoints must move as a
// TPM's clock does.
func TestVerifyTPMClock(t *testing.T) {
	t.Parallel()
	type ci = audit.ClockInfo
	cases := []struct {
		name   string
		clocks []ci
		want   string // problem, "" for none
	}{
		{"forward", []ci{{Clock: 10, ResetCount: 1, Safe: true}, {Clock: 20, ResetCount: 1, Safe: true}}, ""},
		{"reboot", []ci{{Clock: 10, ResetCount: 1, Safe: true}, {Clock: 30, ResetCount: 2, Safe: true}}, ""},
		{"power loss, clock resumes from its last save", []ci{{Clock: 10, ResetCount: 1, Safe: true}, {Clock: 8, ResetCount: 2, Safe: false}}, ""},
		{"clock back without a reset", []ci{{Clock: 10, ResetCount: 1, Safe: true}, {Clock: 9, ResetCount: 1, Safe: false}},
			"carries a TPM clock of 9 ms, below the 10 ms of the checkpoint before it without a reset in between"},
		{"clock back, said safe", []ci{{Clock: 10, ResetCount: 1, Safe: true}, {Clock: 9, ResetCount: 2, Safe: true}},
			"yet the TPM calls its clock safe: the TPM's state went back"},
		{"reset counter back", []ci{{Clock: 10, ResetCount: 5, Safe: true}, {Clock: 20, ResetCount: 4, Safe: true}},
			"carries a TPM reset counter of 4, below the 5 of the checkpoint before it"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := openLog(filepath.Join(t.TempDir(), store.FileName))
			if err != nil {
				t.Fatal(err)
			}
			ak := newAuditKey(t)
			for _, clock := range c.clocks {
				appendN(t, s, 1, "sign")
				if _, err := s.Checkpoint(ctx, "count", ak.sign, func(context.Context) (ci, error) { return clock, nil }); err != nil {
					t.Fatal(err)
				}
			}
			path := s.st.Path()
			s.Close()
			rep, err := audit.VerifyFile(path, ak.key.Public())
			if err != nil {
				t.Fatal(err)
			}
			if c.want == "" && !rep.OK() || c.want != "" && !strings.Contains(rep.Problem, c.want) {
				t.Fatalf("problem %q, want %q", rep.Problem, c.want)
			}
		})
	}
}

// TestRunCheckpoints: a checkpoint at start, every N records, every
// interval while records come (none while idle), and at shutdown. It runs
// in a synctest bubble: time moves only when every goroutine waits, so
// "an interval passed" and "nothing happened meanwhile" are exact.
func TestRunCheckpoints(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		s, err := openLog(filepath.Join(t.TempDir(), store.FileName))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		ak := newAuditKey(t)
		run := func(every uint64, interval time.Duration) (stop func()) {
			runCtx, cancel := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() {
				defer close(done)
				s.RunCheckpoints(runCtx, every, interval, ak.sign, ak.readClock, func(err error) { t.Error(err) })
			}()
			return func() { cancel(); <-done }
		}
		want := func(reason string, seq uint64, count int) {
			t.Helper()
			synctest.Wait() // the checkpointer has done all it will do now
			c, err := s.LastCheckpoint()
			if err != nil || c == nil || c.Reason != reason || c.Seq != seq {
				t.Fatalf("last checkpoint %+v (%v), want %s at %d", c, err, reason, seq)
			}
			rep, err := s.Verify(ak.key.Public())
			if err != nil || !rep.OK() || rep.Checkpoints != count {
				t.Fatalf("after the %s checkpoint at %d: %+v %v, want %d checkpoints", reason, seq, rep, err, count)
			}
		}
		// By count (no interval in sight).
		stop := run(10, time.Hour)
		want("startup", 0, 1)
		appendN(t, s, 9, "sign")
		want("startup", 0, 1) // 9 records: not yet
		appendN(t, s, 1, "sign")
		want("count", 10, 2)
		appendN(t, s, 3, "sign")
		stop()
		want("shutdown", 13, 3)
		// By interval, and not while idle.
		stop = run(1000, time.Minute)
		want("startup", 13, 4)
		appendN(t, s, 2, "sign")
		time.Sleep(time.Minute) // fake time: one interval
		want("interval", 15, 5)
		time.Sleep(time.Hour) // fake time: sixty idle intervals
		want("interval", 15, 5)
		stop()
		want("shutdown", 15, 6)
	})
}
