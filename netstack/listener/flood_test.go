package listener_test

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
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
	a := startAdm(t, listener.Config{MaxConns: 64, MaxConnsPerIP: 8, HandshakeBurstPerIP: 4, Clock: clock.Now})
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
