package listener_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/brokerd/brokerd/netstack/listener"
)

// testClock is a clock that moves only when told.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// junkTickets hands out the sessions of its cache with their ticket
// mangled: the client offers a ticket the server cannot open.
type junkTickets struct {
	tls.ClientSessionCache
	offered atomic.Int32
}

func (c *junkTickets) Get(key string) (*tls.ClientSessionState, bool) {
	cs, ok := c.ClientSessionCache.Get(key)
	if !ok {
		return nil, false
	}
	ticket, state, err := cs.ResumptionState()
	if err != nil || ticket == nil {
		return nil, false
	}
	junk := append([]byte(nil), ticket...)
	junk[len(junk)/2] ^= 0xff
	junked, err := tls.NewResumptionState(junk, state)
	if err != nil {
		return nil, false
	}
	c.offered.Add(1)
	return junked, true
}

// hsClient is a client from one source address that opens a connection
// per request, with the given session cache (nil: every handshake full).
type hsClient struct {
	http    *http.Client
	resumed []bool
}

func (a *admServer) hsClient(src string, version uint16, cache tls.ClientSessionCache, certs ...tls.Certificate) *hsClient {
	c := &hsClient{}
	cfg := a.clientTLS(certs...)
	cfg.MinVersion, cfg.MaxVersion, cfg.ClientSessionCache = version, version, cache
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		c.resumed = append(c.resumed, cs.DidResume)
		return nil
	}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c.http = &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, DialContext: d.DialContext, DisableKeepAlives: true}}
	return c
}

func (c *hsClient) get(url string) (string, error) {
	resp, err := c.http.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return string(body), err
}

// TestHandshakeBucket: full handshakes beyond the bucket of their source
// address fail before the server signs; resumed ones sign nothing and
// pass with the bucket empty; a ticket the server cannot open does not
// dodge the charge; the bucket refills at its rate.
func TestHandshakeBucket(t *testing.T) {
	t.Parallel()
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(fmt.Sprintf("TLS %x", version), func(t *testing.T) {
			clock := &testClock{now: time.Unix(1e9, 0)}
			a := startAdm(t, listener.Config{HandshakesPerIP: 1, HandshakeBurstPerIP: 3, Clock: clock.Now})
			url := "https://" + a.api + "/"
			const src = "127.0.0.1"
			resuming := a.hsClient(src, version, tls.NewLRUClientSessionCache(4))
			junk := &junkTickets{ClientSessionCache: tls.NewLRUClientSessionCache(4)}
			junkClient := a.hsClient(src, version, junk)
			full := a.hsClient(src, version, nil, a.clientCert("alice"))
			expect := func(c *hsClient, want string, signs int64, charged, refused uint64) {
				t.Helper()
				got, err := c.get(url)
				if want == "" && err == nil {
					t.Fatalf("a handshake beyond the bucket passed: %q", got)
				}
				if want != "" && (err != nil || got != want) {
					t.Fatalf("got %q, %v, want %q", got, err, want)
				}
				st := a.srv.AdmissionStats().Handshakes
				if n := a.signs.Load(); n != signs || st.Charged != charged || st.RefusedRate != refused {
					t.Fatalf("%d signatures, stats %+v; want %d signatures, %d charged, %d refused", n, st, signs, charged, refused)
				}
			}
			expect(resuming, "anonymous", 1, 1, 0)
			expect(junkClient, "anonymous", 2, 2, 0)
			expect(full, "alice", 3, 3, 0)
			// The bucket is empty.
			expect(full, "", 3, 3, 1)
			expect(resuming, "anonymous", 3, 3, 1)
			expect(resuming, "anonymous", 3, 3, 1)
			if fmt.Sprint(resuming.resumed) != "[false true true]" {
				t.Fatalf("resumptions %v, want [false true true]", resuming.resumed)
			}
			expect(junkClient, "", 3, 3, 2)
			if junk.offered.Load() != 1 {
				t.Fatalf("the junk ticket was offered %d times, want 1", junk.offered.Load())
			}
			// Another address has its own bucket.
			expect(a.hsClient("127.0.0.2", version, nil), "anonymous", 4, 4, 2)
			// One second: one more token.
			clock.Advance(time.Second)
			expect(full, "alice", 5, 5, 2)
			expect(full, "", 5, 5, 3)
		})
	}
}

// TestHandshakeTableBounded: full handshakes from many addresses keep no
// more buckets than MaxTrackedIPs; the per-address connection table
// empties as connections close.
func TestHandshakeTableBounded(t *testing.T) {
	t.Parallel()
	clock := &testClock{now: time.Unix(1e9, 0)}
	a := startAdm(t, listener.Config{HandshakeBurstPerIP: 2, MaxTrackedIPs: 4, Clock: clock.Now})
	for i := 10; i < 30; i++ {
		c := a.hsClient(fmt.Sprintf("127.0.0.%d", i), tls.VersionTLS13, nil)
		if got, err := c.get("https://" + a.api + "/"); err != nil || got != "anonymous" {
			t.Fatalf("from 127.0.0.%d: %q %v", i, got, err)
		}
		if st := a.srv.AdmissionStats().Handshakes; st.Tracked > 4 {
			t.Fatalf("%d addresses tracked, bound 4", st.Tracked)
		}
	}
	if st := a.srv.AdmissionStats().Handshakes; st.Tracked != 4 || st.Evicted != 16 || st.Charged != 20 {
		t.Fatalf("handshakes %+v", st)
	}
	a.waitFor("every connection closed", func(s listener.AdmissionStats) bool { return s.API.Open == 0 })
	if st := a.srv.AdmissionStats().API; st.Addrs != 0 || st.Accepted != 20 {
		t.Fatalf("connections %+v", st)
	}
}
