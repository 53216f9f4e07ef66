package watch_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/brokerd/brokerd/internal/watch"
)

// TestStampOf: a file's stamp changes with its content, with a rename over
// it (same size, same time), with its removal, and a directory's with the
// files in it.
func TestStampOf(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	f := filepath.Join(dir, "policy.toml")
	write := func(path, data string, mtime time.Time) {
		t.Helper()
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	when := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	write(f, "aaaa", when)
	steps := []struct {
		name string
		do   func()
	}{
		{"content and size", func() { write(f, "aaaaa", when) }},
		{"mtime", func() { write(f, "aaaaa", when.Add(time.Second)) }},
		{"rename over it, same size and time", func() {
			tmp := filepath.Join(dir, ".tmp")
			write(tmp, "bbbbb", when.Add(time.Second))
			if err := os.Rename(tmp, f); err != nil {
				t.Fatal(err)
			}
		}},
		{"removed", func() { os.Remove(f) }},
		{"a file added to the directory", func() { write(filepath.Join(dir, "ca.pem"), "x", when) }},
	}
	for _, s := range steps {
		before := watch.StampOf(f, dir)
		if again := watch.StampOf(f, dir); again != before {
			t.Fatalf("%s: stamp not stable: %q then %q", s.name, before, again)
		}
		s.do()
		if after := watch.StampOf(f, dir); after == before {
			t.Errorf("%s: stamp unchanged: %q", s.name, after)
		}
	}
}

// TestPoll: one reload per change, the outcome told, none without a change,
// and none for a change already loaded by other means (Seen).
func TestPoll(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "policy.toml")
		os.WriteFile(f, []byte("a"), 0o644)
		// Poll's goroutine and the test share these: fake time orders
		// them, atomics tell the race detector so.
		var reloads atomic.Int32
		var seen atomic.Pointer[watch.Stamp]
		setSeen := func() { s := watch.StampOf(f); seen.Store(&s) }
		setSeen()
		outcomes := make(chan error, 8)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go watch.Poll(ctx, watch.Options{Paths: []string{f}, Interval: time.Second,
			Seen: func() watch.Stamp { return *seen.Load() },
			Reload: func() error {
				n := reloads.Add(1)
				setSeen()
				if n == 2 {
					return errors.New("broken")
				}
				return nil
			},
			OnReload: func(err error) { outcomes <- err }})
		poll := func() { time.Sleep(time.Second); synctest.Wait() } // in the bubble: fake time, one poll exactly
		poll()
		if n := reloads.Load(); n != 0 {
			t.Fatalf("%d reloads without a change", n)
		}
		os.WriteFile(f, []byte("bb"), 0o644)
		poll()
		if err := <-outcomes; err != nil || reloads.Load() != 1 {
			t.Fatalf("first change: %d reloads, %v", reloads.Load(), err)
		}
		os.WriteFile(f, []byte("ccc"), 0o644)
		poll()
		if err := <-outcomes; err == nil || err.Error() != "broken" {
			t.Fatalf("second change: %v", err)
		}
		os.WriteFile(f, []byte("dddd"), 0o644)
		setSeen() // loaded by other means (a SIGHUP)
		poll()
		poll()
		if n := reloads.Load(); n != 2 || len(outcomes) != 0 {
			t.Fatalf("%d reloads, %d outcomes; want 2 and none pending", n, len(outcomes))
		}
	})
}
