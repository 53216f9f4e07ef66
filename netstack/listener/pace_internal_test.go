package listener

import (
	"context"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestPace: after an answer that does no work, the connection is held
// (the pause is recorded, not slept): a certified client's 429 or 503 for
// its Retry-After, at most MaxPause; its successes, and refusals without
// a Retry-After in seconds, not at all; requests without a certificate,
// and for /health, beyond their address's burst until their turn, each
// address apart.
func TestPace(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{now: time.Unix(1e9, 0)}
	p := newPacer(Config{RequestsPerIP: 10, RequestBurstPerIP: 2, MaxPause: time.Second, MaxTrackedIPs: 16,
		IPv6PrefixLen: 64, Clock: clock.Now})
	var paused []time.Duration
	p.sleep = func(_ context.Context, d time.Duration) { paused = append(paused, d) }
	h := p.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ra := r.URL.Query().Get("retry"); ra != "" {
			w.Header().Set("Retry-After", ra)
		}
		var status int
		fmt.Sscan(r.URL.Query().Get("status"), &status)
		w.WriteHeader(status)
	}))
	do := func(certified bool, from, query string) []time.Duration {
		t.Helper()
		paused = nil
		path := "/x"
		if strings.HasSuffix(query, "&health") {
			path = "/health"
		}
		r := httptest.NewRequest(http.MethodGet, path+"?"+query, nil)
		r.RemoteAddr = from
		if certified {
			a := &connAuth{}
			a.set([]*x509.Certificate{{}})
			r = r.WithContext(context.WithValue(r.Context(), connAuthKey{}, a))
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if !w.Flushed && len(paused) > 0 {
			t.Fatal("the answer was not sent before the pause")
		}
		return paused
	}
	for _, c := range []struct {
		certified bool
		from      string
		query     string
		want      string
	}{
		{true, "127.0.0.1:1", "status=200", "[]"},
		{true, "127.0.0.1:1", "status=429&retry=1", "[1s]"},
		{true, "127.0.0.1:1", "status=503&retry=5", "[1s]"}, // at most MaxPause
		{true, "127.0.0.1:1", "status=503", "[]"},           // no Retry-After
		{true, "127.0.0.1:1", "status=429&retry=soon", "[]"},
		{true, "127.0.0.4:1", "status=503&retry=5&health", "[]"}, // /health: metered
		{true, "127.0.0.4:1", "status=503&retry=5&health", "[]"},
		{true, "127.0.0.4:1", "status=503&retry=5&health", "[100ms]"},
		// Without a certificate: a burst of 2, then 10 a second.
		{false, "127.0.0.2:1", "status=200", "[]"},
		{false, "127.0.0.2:2", "status=503&retry=5", "[]"},
		{false, "127.0.0.2:3", "status=200", "[100ms]"},
		{false, "127.0.0.2:3", "status=200", "[200ms]"},
		{false, "127.0.0.3:1", "status=200", "[]"},
		{false, "[2001:db8::1]:1", "status=200", "[]"},
		{false, "[2001:db8::2]:1", "status=200", "[]"},
		{false, "[2001:db8::3]:1", "status=200", "[100ms]"}, // one /64
	} {
		if got := fmt.Sprint(do(c.certified, c.from, c.query)); got != c.want {
			t.Fatalf("certified %v, from %s, %s: paused %s, want %s", c.certified, c.from, c.query, got, c.want)
		}
	}
	if st := p.stats(); st.Anonymous != 4 || st.Refusals != 2 {
		t.Fatalf("stats %+v", st)
	}
}
