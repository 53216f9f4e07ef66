package watch_test

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/brokerd/brokerd/internal/watch"
)

func TestPoll(t *testing.T) {
	var changes, reloads atomic.Int32
	changes.Store(2)
	outcomes := make(chan error, 4)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		watch.Poll(ctx, time.Millisecond,
			func() bool { return changes.Add(-1) >= 0 },
			func() error {
				if reloads.Add(1) == 2 {
					return errors.New("broken")
				}
				return nil
			},
			func(err error) { outcomes <- err }, slog.New(slog.DiscardHandler), "reload failed")
	}()
	if err := <-outcomes; err != nil {
		t.Fatalf("first reload: %v", err)
	}
	if err := <-outcomes; err == nil || err.Error() != "broken" {
		t.Fatalf("second reload: %v", err)
	}
	time.Sleep(20 * time.Millisecond) // no change, no reload
	cancel()
	<-done
	if n := reloads.Load(); n != 2 {
		t.Fatalf("%d reloads for 2 changes", n)
	}
}
