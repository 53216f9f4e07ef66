package audit_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/brokerd/brokerd/audit"
	"github.com/brokerd/brokerd/store"
)

// TestRecordsAreBounded: a client's 1 MiB key id or subject is kept as its
// first bytes and its SHA-256, within the bound, and the state file grows
// by that much, not by the megabyte.
func TestRecordsAreBounded(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), store.FileName)
	s, err := openLog(path)
	if err != nil {
		t.Fatal(err)
	}
	huge := strings.Repeat("é", 1<<19) // 1 MiB of two-byte characters
	sum := sha256.Sum256([]byte(huge))
	for range 200 {
		if _, err := s.Append(ctx, audit.Record{Op: "sign", KeyID: huge, Client: huge, Target: huge, Error: huge, Detail: huge, Status: 403}); err != nil {
			t.Fatal(err)
		}
	}
	var got audit.Record
	s.Records(time.Time{}, time.Time{}, func(r audit.Record, _ []byte) error { got = r; return nil })
	s.Close()
	for name, v := range map[string]string{"key_id": got.KeyID, "client": got.Client, "target": got.Target, "error": got.Error} {
		if len(v) > audit.MaxField || !utf8.ValidString(v) || !strings.HasSuffix(v, "bytes, sha256 "+hex.EncodeToString(sum[:])+")") ||
			!strings.HasPrefix(v, "éé") {
			t.Errorf("%s: %d bytes, %q", name, len(v), v[max(0, len(v)-100):])
		}
	}
	if len(got.Detail) > audit.MaxDetail {
		t.Errorf("detail: %d bytes", len(got.Detail))
	}
	if fi, _ := os.Stat(path); fi.Size() > 4<<20 {
		t.Errorf("200 records of 1 MiB fields made a %d-byte state file", fi.Size())
	}
	if short := audit.Truncate("qseal.key", audit.MaxField); short != "qseal.key" {
		t.Errorf("a short value changed: %q", short)
	}
}

// TestLowDiskRefusesAndResumes: below the reserve, records (and so the
// operations) are refused at once with ErrLowDisk, and accepted again by
// themselves once space is back.
func TestLowDiskRefusesAndResumes(t *testing.T) {
	t.Parallel()
	st, err := store.Open(filepath.Join(t.TempDir(), store.FileName), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var free atomic.Uint64
	free.Store(1 << 30)
	l, err := audit.OpenWith(st, audit.Options{MinFree: 100 << 20, FreeSpace: func(string) (uint64, error) { return free.Load(), nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := l.Append(ctx, audit.Record{Op: "sign"}); err != nil {
		t.Fatal(err)
	}
	free.Store(10 << 20)
	waitFor(t, func() bool {
		_, err := l.Append(ctx, audit.Record{Op: "sign"})
		return errors.Is(err, audit.ErrLowDisk) && errors.Is(err, audit.ErrAudit)
	})
	if err := l.Healthy(); !errors.Is(err, audit.ErrLowDisk) || !strings.Contains(err.Error(), "10 MiB free") {
		t.Fatalf("Healthy on a full disk: %v", err)
	}
	free.Store(1 << 30)
	waitFor(t, func() bool { _, err := l.Append(ctx, audit.Record{Op: "sign"}); return err == nil })
	if err := l.Healthy(); err != nil {
		t.Fatalf("Healthy once space is back: %v", err)
	}
}

// waitFor polls cond until it holds: the free space is read at most every
// quarter of a second, so a change shows within that.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 5s")
		}
		time.Sleep(10 * time.Millisecond) // polling a cache with a 250 ms lifetime, not ordering goroutines
	}
}
