package loadgen_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/brokerd/brokerd/internal/loadgen"
)

// TestLoad: workers post over kept-alive mutual-TLS connections, one
// each, from their client's address; a 503 does not slow them (its
// Retry-After is an hour); successes, 503s and latencies are counted.
func TestLoad(t *testing.T) {
	t.Parallel()
	var n atomic.Int64
	var mu sync.Mutex
	seen := map[string]string{} // client CN → source address
	s := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" || string(body) != `{"key_id":"k"}` ||
			r.Header.Get("X-Test") != "yes" || len(r.TLS.PeerCertificates) == 0 {
			http.Error(w, "unexpected request", http.StatusBadRequest)
			return
		}
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		mu.Lock()
		seen[r.TLS.PeerCertificates[0].Subject.CommonName+" from "+host] = ""
		mu.Unlock()
		if i := n.Add(1); i%3 == 0 {
			if i%6 == 0 { // every other refusal says when to come back
				w.Header().Set("Retry-After", "3600")
			}
			http.Error(w, `{"code":"busy"}`, http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, `{"result":"c2lnbmF0dXJl"}`)
	}), true)
	r, err := loadgen.Load(context.Background(), []loadgen.Client{
		{TLS: s.clientTLS(t, "alice"), Source: "127.0.0.1"},
		{TLS: s.clientTLS(t, "bob"), Source: "127.0.0.2"},
	}, loadgen.LoadOptions{URL: s.URL + "/sign", Body: []byte(`{"key_id":"k"}`), Header: http.Header{"X-Test": {"yes"}},
		Workers: 4, Requests: 30})
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests != 30 || r.Successes != 20 || r.Unavailable != 10 || r.RetryAfter != 5 || r.Failed != 0 || r.TransportErrors != 0 ||
		fmt.Sprint(r.Statuses) != "map[200:20 503:10]" {
		t.Fatalf("result %+v", r)
	}
	// One connection per worker that had a turn (a worker may start
	// after the others used up the count).
	if r.Dials > 4 || len(s.waitConns(t, int(r.Dials))) != int(r.Dials) {
		t.Fatalf("%d dials, the server saw %d connections; want at most 4, kept alive", r.Dials, len(s.sources))
	}
	if fmt.Sprint(seen) != "map[alice from 127.0.0.1: bob from 127.0.0.2:]" {
		t.Fatalf("clients seen: %v", seen)
	}
	if r.P50 <= 0 || r.P99 < r.P50 || r.Longest < r.P99 || r.SuccessesPerSec <= 0 || r.UnavailablePerSec <= 0 || r.Elapsed <= 0 {
		t.Fatalf("rates and latencies: %+v", r)
	}
}

// TestLoadLongestCountsRefusals: the slowest answer is reported whatever
// its status, here a refusal that takes longer than any success.
func TestLoadLongestCountsRefusals(t *testing.T) {
	const slow = 50 * time.Millisecond
	var n atomic.Int64
	s := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 5 {
			time.Sleep(slow) // the server under test being slow: what is measured
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok")
	}), false)
	r, err := loadgen.Load(context.Background(), []loadgen.Client{{}}, loadgen.LoadOptions{URL: s.URL, Workers: 1, Requests: 10})
	if err != nil {
		t.Fatal(err)
	}
	if r.Unavailable != 1 || r.RetryAfter != 0 || r.Longest < slow || r.P99 >= slow {
		t.Fatalf("one slow refusal: %+v", r)
	}
}

// TestLoadTransportErrors: a connection the server drops is a transport
// error (a POST is never retried behind the caller's back), and the
// worker dials again.
func TestLoadTransportErrors(t *testing.T) {
	t.Parallel()
	var n atomic.Int64
	s := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%4 == 0 {
			c, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				c.Close()
			}
			return
		}
		io.WriteString(w, "ok")
	}), true)
	r, err := loadgen.Load(context.Background(), []loadgen.Client{{TLS: s.clientTLS(t, "alice")}},
		loadgen.LoadOptions{URL: s.URL, Body: []byte("{}"), Workers: 2, Requests: 20})
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests != 20 || r.Successes != 15 || r.TransportErrors != 5 || r.Dials < 3 || r.Dials > 7 {
		t.Fatalf("result %+v", r)
	}
	if r.FirstTransportError == nil || !loadgen.Refusal(r.FirstTransportError) {
		t.Fatalf("first transport error %v: want the closed connection", r.FirstTransportError)
	}
}

// TestLoadEndsWithContext: the load stops when its context ends, and the
// requests it cut are not counted as errors.
func TestLoadEndsWithContext(t *testing.T) {
	t.Parallel()
	var n atomic.Int64
	blocked := make(chan struct{}, 2)
	s := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) > 10 {
			blocked <- struct{}{}
			<-r.Context().Done()
			return
		}
		io.WriteString(w, "ok")
	}), true)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-blocked
		<-blocked // both workers wait: the 10 answers before are counted
		cancel()
	}()
	r, err := loadgen.Load(ctx, []loadgen.Client{{TLS: s.clientTLS(t, "")}},
		loadgen.LoadOptions{URL: s.URL, Workers: 2, Duration: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests != 10 || r.Successes != 10 || r.TransportErrors != 0 {
		t.Fatalf("result %+v", r)
	}
}

// TestLoadWarmup: the warm-up's requests go over the connections the
// measured ones use, and only those answered after it are counted, over
// the time after it.
func TestLoadWarmup(t *testing.T) {
	t.Parallel()
	var n atomic.Int64
	s := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		time.Sleep(5 * time.Millisecond) // a server's work
		io.WriteString(w, "ok")
	}), true)
	const warmup, d = time.Second, 200 * time.Millisecond
	r, err := loadgen.Load(context.Background(), []loadgen.Client{{TLS: s.clientTLS(t, "")}},
		loadgen.LoadOptions{URL: s.URL, Workers: 2, Duration: d, Warmup: warmup})
	if err != nil {
		t.Fatal(err)
	}
	// The warm-up lasts five times the measured time: over half the
	// answers come within it.
	if r.Dials != 2 || r.Successes <= 0 || r.Successes >= n.Load()/2 || r.TransportErrors != 0 {
		t.Fatalf("%d requests served; result %+v; want 2 dials and less than half the answers counted", n.Load(), r)
	}
	if r.Elapsed < d || r.Elapsed > d+warmup/2 {
		t.Fatalf("elapsed %v, want about %v (the warm-up left out)", r.Elapsed, d)
	}
}

func TestLoadRefusesUnboundedOrMalformed(t *testing.T) {
	t.Parallel()
	c := []loadgen.Client{{}}
	for _, tc := range []struct {
		clients []loadgen.Client
		opts    loadgen.LoadOptions
		want    string
	}{
		{nil, loadgen.LoadOptions{URL: "https://x", Workers: 1, Requests: 1}, "no clients"},
		{c, loadgen.LoadOptions{URL: "https://x", Requests: 1}, "no workers"},
		{c, loadgen.LoadOptions{URL: "https://x", Workers: 1}, "unbounded"},
		{c, loadgen.LoadOptions{URL: "https://x", Workers: 1, Requests: 1, Warmup: time.Second}, "a warm-up needs a Duration"},
		{c, loadgen.LoadOptions{URL: "https://x", Workers: 1, Duration: time.Second, Warmup: -1}, "a warm-up needs a Duration"},
		{c, loadgen.LoadOptions{URL: "://x", Workers: 1, Requests: 1}, "missing protocol scheme"},
		{[]loadgen.Client{{Source: "host"}}, loadgen.LoadOptions{URL: "https://x", Workers: 1, Requests: 1}, "not an IP address"},
	} {
		if _, err := loadgen.Load(context.Background(), tc.clients, tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) ||
			!strings.HasPrefix(err.Error(), "loadgen: load: ") {
			t.Errorf("%+v: %v, want %q", tc.opts, err, tc.want)
		}
	}
}

func TestPercentile(t *testing.T) {
	t.Parallel()
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i))
	}
	for _, tc := range []struct {
		d    []time.Duration
		p    float64
		want time.Duration
	}{{d, 0.5, 50}, {d, 0.99, 99}, {d, 1, 100}, {d, 0.001, 1}, {d[:1], 0.99, 1}, {d[:3], 0.5, 2}, {nil, 0.5, 0}} {
		if got := loadgen.Percentile(tc.d, tc.p); got != tc.want {
			t.Errorf("p%v of %d: %d, want %d", tc.p, len(tc.d), got, tc.want)
		}
	}
}
