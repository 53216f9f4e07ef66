package admin

import (
	"context"
	"net"
	"testing"
	"time"
)

// TestExchangeAfterTheStop: a command that first talks to its caller
// after the daemon began to stop fails at once. The stop sets the
// connection's deadline to now; an exchange sets one of its own, which
// must not undo the stop's (it did, and the call then held the daemon's
// shutdown for the exchange timeout, five minutes).
func TestExchangeAfterTheStop(t *testing.T) {
	t.Parallel()
	daemonSide, callerSide := net.Pipe() // the caller never answers
	defer daemonSide.Close()
	defer callerSide.Close()
	go func() { // the caller reads the request, and says nothing
		buf := make([]byte, 4096)
		for {
			if _, err := callerSide.Read(buf); err != nil {
				return
			}
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	daemonSide.SetDeadline(time.Now()) // what the stop does
	s := &Session{ctx: ctx, c: newConn(daemonSide), conn: daemonSide}
	done := make(chan error, 1)
	go func() {
		_, err := s.exchange(message{Kind: kindStdin, Size: 1}, true)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("an exchange after the stop succeeded")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("an exchange after the stop waits on the caller")
	}
}
