package bank_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/brokerd/brokerd/netstack/bank"
)

// testBank is a plain-HTTP bank on loopback that counts its connections.
type testBank struct {
	*httptest.Server
	conns atomic.Int64
	seen  chan http.Header // request headers of /landing
}

func newTestBank(t *testing.T, routes func(tb *testBank, mux *http.ServeMux)) *testBank {
	tb := &testBank{seen: make(chan http.Header, 16)}
	mux := http.NewServeMux()
	routes(tb, mux)
	tb.Server = httptest.NewUnstartedServer(mux)
	tb.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			tb.conns.Add(1)
		}
	}
	tb.Start()
	t.Cleanup(tb.Close)
	return tb
}

func (tb *testBank) port() string { u, _ := url.Parse(tb.URL); return u.Port() }

// loopbackOnly resolves the test names to loopback and dials nothing else:
// no packet leaves the machine.
func loopbackOnly(t *testing.T) bank.Config {
	return bank.Config{
		Resolve: func(_ context.Context, host string) ([]net.IP, error) {
			if host == "bank.test" || host == "other.test" {
				return []net.IP{net.ParseIP("127.0.0.1")}, nil
			}
			return nil, fmt.Errorf("no such host %s", host)
		},
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if host, _, _ := net.SplitHostPort(addr); host != "127.0.0.1" {
				t.Errorf("the client dialled %s", addr)
				return nil, errors.New("refused by the test")
			}
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
}

// privateOK is the hop check of a rule that lists the test origins with
// --allow-private; refuse names an origin it refuses.
func privateOK(refuse string) func(*url.URL) (bank.Hop, error) {
	return func(u *url.URL) (bank.Hop, error) {
		if refuse != "" && u.Host == refuse {
			return bank.Hop{}, errors.New("refused hop")
		}
		return bank.Hop{AllowPrivate: true, Rule: "test"}, nil
	}
}

func headerNames(h [][2]string) []string {
	var out []string
	for _, kv := range h {
		out = append(out, strings.ToLower(kv[0]))
	}
	return out
}

// redirectingBank answers redirects that a call may drop (to itself, to a
// loop, to a bad Location, to other's /landing, refused or followed), each
// with a cookie, a plain answer, and a final one after 103 Early Hints.
func redirectingBank(t *testing.T, other *testBank) *testBank {
	return newTestBank(t, func(tb *testBank, mux *http.ServeMux) {
		redirect := func(path, to string) {
			mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Set-Cookie", "leak"+strings.Trim(path, "/")+"=1")
				w.Header().Set("Location", to)
				w.WriteHeader(http.StatusFound)
			})
		}
		redirect("/same", "/final")
		redirect("/loop", "/loop")
		redirect("/bad", "ftp://bank.test/x")
		redirect("/refused", "http://other.test:"+other.port()+"/landing")
		redirect("/cross", "http://other.test:"+other.port()+"/landing")
		mux.HandleFunc("/final", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Final", "yes")
			w.Write([]byte("final"))
		})
		mux.HandleFunc("/plain", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Plain", "yes")
			w.Write([]byte("plain"))
		})
		mux.HandleFunc("/hints", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			w.Header().Del("Link")
			w.Header().Set("X-Final", "yes")
			w.Write([]byte("after hints"))
		})
	})
}

// clean fails when an answer carries the headers of a dropped response
// (its cookie, its Location) or lacks one of want.
func clean(t *testing.T, step string, resp *bank.Response, want ...string) {
	t.Helper()
	names := headerNames(resp.Header)
	for _, leaked := range []string{"set-cookie", "location"} {
		if slices.Contains(names, leaked) {
			t.Fatalf("%s: the answer carries %s from a response that was dropped: %v", step, leaked, resp.Header)
		}
	}
	for _, w := range want {
		if !slices.Contains(names, w) {
			t.Fatalf("%s: %s missing from %v", step, w, resp.Header)
		}
	}
}

// TestNoHeadersFromAnotherCall: a response dropped on any redirect path
// (followed, too many, refused hop, bad Location, cross-origin) never
// gives its headers to the answer of the call, nor to the next call on the
// same pooled connection, made for another client.
func TestNoHeadersFromAnotherCall(t *testing.T) {
	t.Parallel()
	other := newTestBank(t, func(tb *testBank, mux *http.ServeMux) {
		mux.HandleFunc("/landing", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("landed")) })
	})
	b := redirectingBank(t, other)
	cfg := loopbackOnly(t)
	cfg.MaxRedirects = 3
	c := bank.New(cfg, nil)
	call := func(path string, refuse string) (*bank.Response, error) {
		u, _ := url.Parse("http://bank.test:" + b.port() + path)
		return c.Do(context.Background(), &bank.Request{Method: "GET", URL: u, FollowRedirects: true, CheckHop: privateOK(refuse)})
	}
	resp, err := call("/same", "")
	if err != nil || string(resp.Body) != "final" {
		t.Fatalf("same-origin redirect: %v %v", resp, err)
	}
	clean(t, "same-origin redirect followed", resp, "x-final")
	drops := []struct{ path, refuse, errPart string }{
		{"/loop", "", "more than 3 redirects"},
		{"/bad", "", "no http(s) URL"},
		{"/refused", "other.test:" + other.port(), "refused hop"},
	}
	for _, d := range drops {
		if _, err := call(d.path, d.refuse); err == nil || !strings.Contains(err.Error(), d.errPart) {
			t.Fatalf("%s: %v, want %q", d.path, err, d.errPart)
		}
		before := b.conns.Load()
		resp, err := call("/plain", "") // another client's call, same pool
		if err != nil {
			t.Fatal(err)
		}
		clean(t, "the call after "+d.path, resp, "x-plain")
		if b.conns.Load() != before {
			t.Fatalf("after %s the next call opened a new connection: the test no longer covers a reused one", d.path)
		}
	}
	if resp, err := call("/cross", ""); err != nil || string(resp.Body) != "landed" {
		t.Fatalf("cross-origin redirect: %v %v", resp, err)
	} else {
		clean(t, "cross-origin redirect followed", resp)
	}
	resp, _ = call("/plain", "")
	clean(t, "the call after a cross-origin redirect", resp, "x-plain")
	resp, err = call("/hints", "")
	if err != nil || string(resp.Body) != "after hints" {
		t.Fatalf("103 Early Hints: %v %v", resp, err)
	}
	if names := headerNames(resp.Header); slices.Contains(names, "link") || !slices.Contains(names, "x-final") {
		t.Fatalf("103 Early Hints: the answer has the hints' headers: %v", resp.Header)
	}
}

// TestRedirectDropsCredentials: a redirect to another origin carries no
// cookie, proxy or configured credential header; one within the origin
// keeps them.
func TestRedirectDropsCredentials(t *testing.T) {
	t.Parallel()
	landing := func(tb *testBank, mux *http.ServeMux) {
		mux.HandleFunc("/landing", func(w http.ResponseWriter, r *http.Request) {
			tb.seen <- r.Header.Clone()
			w.Write([]byte("ok"))
		})
	}
	other := newTestBank(t, landing)
	b := newTestBank(t, func(tb *testBank, mux *http.ServeMux) {
		landing(tb, mux)
		mux.HandleFunc("/cross", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://other.test:"+other.port()+"/landing", http.StatusTemporaryRedirect)
		})
		mux.HandleFunc("/same", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/landing", http.StatusTemporaryRedirect)
		})
	})
	c := bank.New(loopbackOnly(t), nil)
	creds := [][2]string{{"Authorization", "Bearer t"}, {"Cookie", "s=1"}, {"X-API-Key", "k"}, {"Signature", "sig"},
		{"Digest", "SHA-256=x"}, {"TPP-Signature-Certificate", "MII"}, {"Proxy-Authorization", "Basic x"}, {"Proxy-Foo", "y"}}
	header := append([][2]string{{"X-Request-ID", "r1"}}, creds...)
	for _, c2 := range []struct {
		path    string
		into    *testBank
		dropped bool
	}{{"/cross", other, true}, {"/same", b, false}} {
		u, _ := url.Parse("http://bank.test:" + b.port() + c2.path)
		if _, err := c.Do(context.Background(), &bank.Request{Method: "GET", URL: u, Header: header, FollowRedirects: true,
			CheckHop: privateOK("")}); err != nil {
			t.Fatal(err)
		}
		got := <-c2.into.seen
		if got.Get("X-Request-ID") != "r1" {
			t.Fatalf("%s: X-Request-ID lost", c2.path)
		}
		for _, kv := range creds {
			if kv[0] == "Proxy-Authorization" {
				continue // hop-by-hop: never forwarded at all
			}
			if present := got.Get(kv[0]) != ""; present == c2.dropped {
				t.Errorf("%s: %s present=%v, want %v", c2.path, kv[0], present, !c2.dropped)
			}
		}
	}
}

// TestPoolsAreBounded: beyond MaxPools the least recently used pool goes.
func TestPoolsAreBounded(t *testing.T) {
	t.Parallel()
	var banks []*testBank
	for range 3 {
		banks = append(banks, newTestBank(t, func(tb *testBank, mux *http.ServeMux) {
			mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
		}))
	}
	cfg := loopbackOnly(t)
	cfg.MaxPools = 2
	c := bank.New(cfg, nil)
	for _, b := range banks {
		u, _ := url.Parse("http://bank.test:" + b.port() + "/")
		if _, err := c.Do(context.Background(), &bank.Request{Method: "GET", URL: u, CheckHop: privateOK("")}); err != nil {
			t.Fatal(err)
		}
	}
	if n := c.Pools(); n != 2 {
		t.Fatalf("%d pools kept, want 2", n)
	}
}
