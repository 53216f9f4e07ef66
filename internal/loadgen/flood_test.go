package loadgen_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/brokerd/brokerd/internal/loadgen"
)

func TestFloodRefusesUnboundedOrMalformed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		opts loadgen.FloodOptions
		want string
	}{
		{loadgen.FloodOptions{Count: 1}, "no workers"},
		{loadgen.FloodOptions{Conns: 1}, "unbounded"},
		{loadgen.FloodOptions{Conns: 1, Count: 1, Source: "::x"}, "not an IP address"},
	} {
		if _, err := loadgen.Flood(context.Background(), "127.0.0.1:1", tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) ||
			!strings.HasPrefix(err.Error(), "loadgen: flood: ") {
			t.Errorf("%+v: %v, want %q", tc.opts, err, tc.want)
		}
	}
}

// TestFloodHandshakes: every attempt is a full handshake (one server
// signature each, nothing resumed), from the source address asked, to
// the end or only until the ServerHello, in TLS 1.2 and 1.3.
func TestFloodHandshakes(t *testing.T) {
	t.Parallel()
	s := newServer(t, http.NotFoundHandler(), true)
	want := int64(0)
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		for _, abort := range []bool{false, true} {
			cfg := s.clientTLS(t, "")
			cfg.MaxVersion = version
			cfg.ClientSessionCache = tls.NewLRUClientSessionCache(8) // ignored
			r, err := loadgen.Flood(context.Background(), s.addr(), loadgen.FloodOptions{Source: "127.0.0.3", Handshakes: 3, Count: 12,
				TLS: cfg, AbortAfterServerHello: abort})
			if err != nil {
				t.Fatal(err)
			}
			want += 12
			if h := r.Handshakes; h.Attempts != 12 || h.OK != 12 || s.signs.Load() != want {
				t.Fatalf("TLS %x, abort %v: %+v, %d signatures, want %d", version, abort, h, s.signs.Load(), want)
			}
		}
	}
	if src := s.waitConns(t, int(want)); !all(src, "127.0.0.3") {
		t.Fatalf("sources %v", src)
	}
}

// TestFloodRefusals: resets and alerts count as refusals, whatever the
// kind of attempt.
func TestFloodRefusals(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
	}()
	alerting := newServer(t, http.NotFoundHandler(), true, func(cfg *tls.Config) {
		cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) { return nil, fmt.Errorf("no") }
	})
	for _, tc := range []struct {
		name, target string
		opts         loadgen.FloodOptions
		counts       func(loadgen.FloodResult) loadgen.FloodCounts
	}{
		{"handshake reset", l.Addr().String(), loadgen.FloodOptions{Handshakes: 2}, func(r loadgen.FloodResult) loadgen.FloodCounts { return r.Handshakes }},
		{"hello reset", l.Addr().String(), loadgen.FloodOptions{Handshakes: 2, AbortAfterServerHello: true}, func(r loadgen.FloodResult) loadgen.FloodCounts { return r.Handshakes }},
		{"held conn reset", l.Addr().String(), loadgen.FloodOptions{Conns: 2, HoldConns: true}, func(r loadgen.FloodResult) loadgen.FloodCounts { return r.Conns }},
		{"health reset", l.Addr().String(), loadgen.FloodOptions{Health: 2}, func(r loadgen.FloodResult) loadgen.FloodCounts { return r.Health }},
		{"handshake alert", alerting.addr(), loadgen.FloodOptions{Handshakes: 2}, func(r loadgen.FloodResult) loadgen.FloodCounts { return r.Handshakes }},
		{"hello alert", alerting.addr(), loadgen.FloodOptions{Handshakes: 2, AbortAfterServerHello: true}, func(r loadgen.FloodResult) loadgen.FloodCounts { return r.Handshakes }},
	} {
		tc.opts.Count = 6
		r, err := loadgen.Flood(context.Background(), tc.target, tc.opts)
		if err != nil {
			t.Fatal(err)
		}
		if c := tc.counts(r); c.Attempts != 6 || c.Refused != 6 {
			t.Errorf("%s: %+v", tc.name, c)
		}
	}
}

// TestFloodConnsAndHealth: bare connections closed at once or held to
// the end; GET /health over kept-alive connections, answers counted by
// status.
func TestFloodConnsAndHealth(t *testing.T) {
	t.Parallel()
	var n atomic.Int64
	s := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" {
			http.NotFound(w, r)
			return
		}
		if n.Add(1)%2 == 0 {
			http.Error(w, "tpm stopped", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok")
	}), false)
	var opened sync.Map
	r, err := loadgen.Flood(context.Background(), s.addr(), loadgen.FloodOptions{Source: "127.0.0.4", Health: 3, Count: 30,
		HealthURL: s.URL + "/health", Opened: func(kind string) {
			n, _ := opened.LoadOrStore(kind, new(atomic.Int32))
			n.(*atomic.Int32).Add(1)
		}})
	if err != nil {
		t.Fatal(err)
	}
	if h := r.Health; h.Attempts != 30 || h.OK != 15 || h.Failed != 15 || fmt.Sprint(h.Statuses) != "map[200:15 503:15]" {
		t.Fatalf("health %+v", h)
	}
	// One connection per worker that had a turn (a worker may start
	// after the others used up the count).
	o, ok := opened.Load(loadgen.KindHealth)
	if !ok || o.(*atomic.Int32).Load() > 3 {
		t.Fatalf("Opened heard of %v health connections, want 1 to 3", o)
	}
	health := int(o.(*atomic.Int32).Load())
	if src := s.waitConns(t, health); len(src) != health || !all(src, "127.0.0.4") {
		t.Fatalf("health connections from %v, want %d from 127.0.0.4", src, health)
	}

	r, err = loadgen.Flood(context.Background(), s.addr(), loadgen.FloodOptions{Source: "127.0.0.4", Conns: 2, Count: 10})
	if err != nil {
		t.Fatal(err)
	}
	if c := r.Conns; c.Attempts != 10 || c.OK != 10 {
		t.Fatalf("connections %+v", c)
	}
	s.waitConns(t, health+10)

	// Held: the flood ends when the three are open.
	ctx, cancel := context.WithCancel(context.Background())
	var open atomic.Int32
	r, err = loadgen.Flood(ctx, s.addr(), loadgen.FloodOptions{Conns: 3, Count: 3, HoldConns: true, Opened: func(kind string) {
		if kind == loadgen.KindConn && open.Add(1) == 3 {
			cancel()
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if c := r.Conns; c.Attempts != 3 || c.OK != 3 {
		t.Fatalf("held connections %+v", c)
	}
}
