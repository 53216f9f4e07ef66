package listener_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"syscall"
	"testing"
	"time"

	"github.com/brokerd/brokerd/internal/loadgen"
	"github.com/brokerd/brokerd/netstack/listener"
)

// keptAlive is a certified client on one kept-alive connection from src.
type keptAlive struct {
	http *http.Client
	url  string
}

func (a *admServer) keptAlive(src, cn string) *keptAlive {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	tr := &http.Transport{TLSClientConfig: a.clientTLS(a.clientCert(cn)), DialContext: d.DialContext, MaxIdleConnsPerHost: 1}
	a.t.Cleanup(tr.CloseIdleConnections)
	return &keptAlive{http: &http.Client{Transport: tr}, url: "https://" + a.api + "/"}
}

// get sends a request and returns the answer and whether it came over a
// connection used before.
func (k *keptAlive) get(t *testing.T) (string, bool) {
	t.Helper()
	var reused bool
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) { reused = info.Reused }})
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := k.http.Do(req)
	if err != nil {
		t.Fatalf("a certified client during the flood: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body), reused
}

// TestKeptAliveClientsServedDuringFlood: while one address floods the
// API listener with full handshakes (to the end and dropped after the
// ServerHello), /health over TLS and held connections, until its
// handshake bucket refuses it and its refusals close it at accept,
// certified clients with a kept-alive connection, from that address and
// from another, are served on that connection; the flood's connections
// leave no state.
func TestKeptAliveClientsServedDuringFlood(t *testing.T) {
	t.Parallel()
	clock := &testClock{now: time.Unix(1e9, 0)} // the buckets never refill
	// Refused connections held (and answers paced) 20 ms: the floods see their refusals.
	a := startAdm(t, listener.Config{MaxConns: 64, MaxConnsPerIP: 8, HandshakeBurstPerIP: 4, MaxPause: 20 * time.Millisecond, Clock: clock.Now})
	alice, bob := a.keptAlive("127.0.0.1", "alice"), a.keptAlive("127.0.0.2", "bob")
	for _, c := range []struct {
		k    *keptAlive
		want string
	}{{alice, "alice"}, {bob, "bob"}} {
		if got, _ := c.k.get(t); got != c.want {
			t.Fatalf("before the flood: %q, want %q", got, c.want)
		}
	}

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	type flood struct {
		r   loadgen.FloodResult
		err error
	}
	done := make(chan flood, 3)
	start := func(opts loadgen.FloodOptions) {
		opts.Source, opts.Count, opts.Duration = "127.0.0.1", 1<<30, 10*time.Minute
		opts.TLS = &tls.Config{RootCAs: a.pool, ServerName: "localhost"}
		go func() {
			r, err := loadgen.Flood(ctx, a.api, opts)
			done <- flood{r, err}
		}()
	}
	// Handshakes, to the end or dropped after the ServerHello, and
	// /health over TLS: the bucket of 127.0.0.1 runs dry.
	start(loadgen.FloodOptions{Handshakes: 4, Health: 2})
	start(loadgen.FloodOptions{Handshakes: 4, Health: 2, AbortAfterServerHello: true})
	// After a burst of refused handshakes (the buckets never refill
	// here), 127.0.0.1's new connections are reset at accept.
	a.waitFor("the flood refused by rate", func(s listener.AdmissionStats) bool {
		return s.Handshakes.RefusedRate >= 4 && s.API.RefusedRate >= 10
	})
	// Held connections: refused at accept too.
	before := a.srv.AdmissionStats().API
	start(loadgen.FloodOptions{Conns: 10, HoldConns: true})
	a.waitFor("the held connections refused", func(s listener.AdmissionStats) bool {
		return s.API.RefusedRate+s.API.RefusedCapPerIP >= before.RefusedRate+before.RefusedCapPerIP+10
	})
	for range 20 {
		for _, c := range []struct {
			k    *keptAlive
			want string
		}{{alice, "alice"}, {bob, "bob"}} {
			if got, reused := c.k.get(t); got != c.want || !reused {
				t.Fatalf("during the flood: %q (connection reused: %v), want %q on the same connection", got, reused, c.want)
			}
		}
	}
	st := a.srv.AdmissionStats()
	// 40 more refused at accept: the floods have seen the earlier ones reset.
	a.waitFor("40 more refused at accept", func(s listener.AdmissionStats) bool { return s.API.RefusedRate >= st.API.RefusedRate+40 })
	stop()
	var refused int64
	for range 3 {
		f := <-done
		if f.err != nil {
			t.Fatal(f.err)
		}
		refused += f.r.Handshakes.Refused + f.r.Conns.Refused + f.r.Health.Refused
	}
	if refused < 20 {
		t.Errorf("the floods saw %d refusals, want at least 20", refused)
	}
	if st.Handshakes.Charged != 2+3 { // alice, bob, then the 3 tokens 127.0.0.1 had left
		t.Errorf("during the flood: %+v, want 5 full handshakes charged", st.Handshakes)
	}
	if n := a.signs.Load(); n != 5 {
		t.Errorf("%d signatures, want 5", n)
	}
	a.waitFor("the flood's connections closed", func(s listener.AdmissionStats) bool { return s.API.Open == 2 })
	if st := a.srv.AdmissionStats(); st.API.Addrs != 2 || st.Handshakes.Tracked != 2 {
		t.Fatalf("after the flood: %+v", st)
	}
	t.Logf("during the flood: %+v", st)
}

// attempt is one flooder's try: a ClientHello from src, then a wait for
// the server's answer.
type attempt struct {
	answered int64 // bytes the server sent
	err      error
	took     time.Duration
}

func (a *admServer) attempt(src string) attempt {
	start := time.Now()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", a.api)
	if err != nil { // reset before the dialler looked: refused all the same
		return attempt{0, err, time.Since(start)}
	}
	defer c.Close()
	rc := &readCounter{Conn: c}
	c.SetDeadline(time.Now().Add(20 * time.Second)) // a guard, not an ordering
	err = tls.Client(rc, a.clientTLS()).Handshake()
	return attempt{rc.n.Load(), err, time.Since(start)}
}

// refusedUnanswered checks that at was refused without a byte of answer.
func refusedUnanswered(t *testing.T, what string, at attempt) {
	t.Helper()
	if at.answered != 0 || at.err == nil || (!errors.Is(at.err, syscall.ECONNRESET) && !errors.Is(at.err, io.EOF)) {
		t.Fatalf("%s: %d bytes answered, %v; want a reset without an answer", what, at.answered, at.err)
	}
}

// closeAddress has src's one full handshake, then one refused, which
// closes it (HandshakeBurstPerIP 1, a clock that never moves). It returns
// the connection of the handshake.
func (a *admServer) closeAddress(src string) net.Conn {
	a.t.Helper()
	c := a.handshake(dial(a.t, src, a.api))
	if err := tls.Client(dial(a.t, src, a.api), a.clientTLS()).Handshake(); err == nil {
		a.t.Fatal("a full handshake over the rate was allowed")
	}
	a.waitFor("the address closed", func(s listener.AdmissionStats) bool { return s.Handshakes.RefusedRate == 1 })
	return c
}

// TestClosedAddressHeld: a connection from an address closed for its
// refused handshakes is held, unanswered, for MaxPause and then reset;
// at most MaxConns at once (more than MaxConnsPerIP from one address),
// beyond which one is reset at once; other addresses are served
// meanwhile; a server shutting down resets what it holds at once.
func TestClosedAddressHeld(t *testing.T) {
	t.Parallel()
	// The fourth attempt's reset comes well within the pause.
	const pause = time.Second
	clock := &testClock{now: time.Unix(1e9, 0)} // the buckets never refill
	a := startAdm(t, listener.Config{MaxConns: 3, MaxConnsPerIP: 2, HandshakeBurstPerIP: 1, MaxPause: pause, Clock: clock.Now})
	a.closeAddress("127.0.0.1")

	held := make(chan attempt, 3)
	for range 3 {
		go func() { held <- a.attempt("127.0.0.1") }()
	}
	a.waitFor("three connections held", func(s listener.AdmissionStats) bool { return s.API.Held == 3 })
	fourth := a.attempt("127.0.0.1")
	select {
	case at := <-held:
		t.Fatalf("a held connection ended (%v after %v) before the fourth, beyond the bound, was reset", at.err, at.took)
	default:
	}
	refusedUnanswered(t, "the fourth connection, beyond the bound", fourth)
	a.handshake(dial(t, "127.0.0.2", a.api)) // another address is served meanwhile
	for range 3 {
		at := <-held
		refusedUnanswered(t, "a held connection", at)
		if at.took < pause {
			t.Fatalf("a held connection was reset after %v, want at least %v", at.took, pause)
		}
	}
	a.waitFor("nothing held", func(s listener.AdmissionStats) bool { return s.API.Held == 0 })
	if st := a.srv.AdmissionStats(); st.API.RefusedRate != 4 || st.API.Open != 2 || a.signs.Load() != 2 {
		t.Fatalf("at the end: %+v, %d signatures; want 4 refused at accept, 2 open, 2 signatures", st, a.signs.Load())
	}

	// A server shutting down resets the connections it holds.
	b := startAdm(t, listener.Config{HandshakeBurstPerIP: 1, MaxPause: time.Hour, Clock: clock.Now})
	b.closeAddress("127.0.0.1").Close() // no connection open to wait for
	go func() { held <- b.attempt("127.0.0.1") }()
	b.waitFor("a connection held", func(s listener.AdmissionStats) bool { return s.API.Held == 1 && s.API.Open == 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	at := <-held
	refusedUnanswered(t, "a connection held at shutdown", at)
	if st := b.srv.AdmissionStats(); st.API.Held != 0 {
		t.Fatalf("after the shutdown: %d held", st.API.Held)
	}
}
