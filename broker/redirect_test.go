package broker_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/brokerd/brokerd/broker"
)

// TestTrailingSlashRedirectIgnoresHost: the redirect of /sign/ to /sign is
// built from the configured server name and the port the request came in
// on, never from the client's Host header (which could point the next
// request, with its body, elsewhere); without a name it is relative.
func TestTrailingSlashRedirectIgnoresHost(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{})
	named := s.serve(broker.Config{Audit: s.log, ServerName: func() string { return "broker.lan" }})
	unnamed := s.serve(broker.Config{Audit: s.log})
	noFollow := *s.client
	noFollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	for _, c := range []struct{ base, want string }{
		{named, "https://broker.lan:" + named[strings.LastIndex(named, ":")+1:] + "/sign?x=1"},
		{unnamed, "/sign?x=1"},
	} {
		req, _ := http.NewRequest("POST", c.base+"/sign/?x=1", strings.NewReader("{}"))
		req.Host = "evil.example"
		resp, err := noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 307 || resp.Header.Get("Location") != c.want {
			t.Errorf("%s: %d Location %q, want %q", c.base, resp.StatusCode, resp.Header.Get("Location"), c.want)
		}
	}
}

// TestRedirectsAreRecorded: the record of a makeRequest names every hop a
// redirect led to (origin and path, no query), followed or refused.
func TestRedirectsAreRecorded(t *testing.T) {
	t.Parallel()
	s, agg := bankStack(t, stackOptions{})
	seq, _ := s.log.Head()
	if status, r, raw := mr(t, s, agg, req("GET", s.bank.URL, "/redirect?to=/echo/after%3Fsecret=1", withQWAC), ""); status != 200 || r.Status != 200 {
		t.Fatalf("followed: %d %s", status, raw)
	}
	if status, _, raw := mr(t, s, agg, req("GET", s.bank.URL, "/redirect?to=https://10.1.2.3/x", withQWAC), ""); status != 403 {
		t.Fatalf("refused hop: %d %s", status, raw)
	}
	var details []string
	for _, r := range records(t, s, seq) {
		if r.Op == "makeRequest" {
			details = append(details, r.Detail)
		}
	}
	want := []string{"bank status 200; redirected to " + s.bank.URL + "/echo/after", "redirected to https://10.1.2.3:443/x"}
	if len(details) != 2 || details[0] != want[0] || details[1] != want[1] {
		t.Fatalf("details %q\nwant %q", details, want)
	}
}
