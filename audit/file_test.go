package audit_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/brokerd/brokerd/audit"
	"github.com/brokerd/brokerd/store"
)

func TestParseTime(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]time.Time{
		"":                          {},
		"2026-03-01":                time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC),
		"2026-03-01T12:00:00Z":      time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC),
		"2026-03-01T14:00:00+02:00": time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC),
	} {
		if got, err := audit.ParseTime(in); err != nil || !got.Equal(want) {
			t.Errorf("ParseTime(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"yesterday", "2026-13-01", "01.03.2026"} {
		if _, err := audit.ParseTime(in); err == nil || !strings.Contains(err.Error(), "want 2026-03-01 or 2026-03-01T12:00:00Z") {
			t.Errorf("ParseTime(%q): %v", in, err)
		}
	}
}

// TestOpenFile: a state file opens read-only beside other readers; one
// that a writer holds fails at once with what to do instead.
func TestOpenFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), store.FileName)
	st, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := audit.Open(st)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(ctx, audit.Record{Op: "sign", Status: 200}); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := audit.OpenFile(path, 10*time.Millisecond); err == nil || !strings.Contains(err.Error(), "held by another process") ||
		!strings.Contains(err.Error(), "give the copy with --db") {
		t.Fatalf("OpenFile of a held file: %v", err)
	}
	l.Close()
	st.Close()

	ro, rst, release, err := audit.OpenFile(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if !rst.ReadOnly() {
		t.Error("the store is writable")
	}
	if seq, _ := ro.Head(); seq != 1 {
		t.Errorf("head %d, want 1", seq)
	}
	if _, _, _, err := audit.OpenFile(filepath.Join(t.TempDir(), "none.db"), time.Second); err == nil {
		t.Error("a missing file opened")
	}
}
