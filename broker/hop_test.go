package broker_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/brokerd/brokerd/internal/mockbank"
	"github.com/brokerd/brokerd/netstack/bank"
	"github.com/brokerd/brokerd/policy"
)

// TestPolicyRecheckedOnEveryHop: a redirect to an origin the client's
// rule does not name is refused by the policy itself, before anything is
// dialled, even when the target is a public address the address guard
// would let through.
func TestPolicyRecheckedOnEveryHop(t *testing.T) {
	t.Parallel()
	b := mockbank.Start(t, mockbank.Options{})
	var dialledElsewhere atomic.Int32
	out := bank.Config{
		UserAgent: "brokerd-test",
		Resolve: func(_ context.Context, host string) ([]net.IP, error) {
			if host == "elsewhere.test" {
				return []net.IP{net.ParseIP("93.184.216.34")}, nil // public: the guard lets it through
			}
			return resolver(context.Background(), host)
		},
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, _ := net.SplitHostPort(addr)
			switch host {
			case "93.184.216.34": // never reaches the network: counted, sent to loopback
				dialledElsewhere.Add(1)
				var d net.Dialer
				return d.DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
			case "127.0.0.1":
				var d net.Dialer
				return d.DialContext(ctx, network, addr)
			}
			t.Errorf("dialled %s", addr)
			return nil, errors.New("refused by the test")
		},
	}
	s := newStack(t, stackOptions{bank: b, outbound: out, rules: []policy.Rule{{Name: "hopper-bank", CN: "hopper",
		Keys: []string{"qwac.key"}, Ops: []string{"makeRequest"}, Origins: []string{b.URL}, AllowPrivate: true}}})
	hopper := s.clientFor(t, "hopper")
	port := b.URL[strings.LastIndex(b.URL, ":")+1:]
	status, _, raw := mr(t, s, hopper, req("GET", b.URL, "/redirect?to=https://elsewhere.test:"+port+"/echo/x", withQWAC), "")
	want := fmt.Sprintf(`{"code":403,"message":"Forbidden","data":"client CN=hopper may not makeRequest to https://elsewhere.test:%s with key \"qwac.key\""}`, port)
	if status != 403 || raw != want {
		t.Fatalf("redirect to an origin the rule does not name: %d %s\nwant 403 %s", status, raw, want)
	}
	if n := dialledElsewhere.Load(); n != 0 {
		t.Fatalf("the refused hop was dialled %d times", n)
	}
}
