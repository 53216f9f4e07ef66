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
