package daemon_test

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/brokerd/brokerd/daemon"
	"github.com/brokerd/brokerd/internal/testpki"
	"github.com/brokerd/brokerd/keys"
	"github.com/brokerd/brokerd/policy"
)

// TestCertificateExpiryWarnings: with keys.expiry_warning_days 30, a key
// whose certificate ends in 10 days and one whose certificate ended
// yesterday are named in the log, in /health?details (for a client with
// a certificate; the plain answer stays the reference's) and in the
// metric brokerd_certificate_expiry_warning; a key valid for 90 more days
// is not. The expired one is refused by the signing helpers.
func TestCertificateExpiryWarnings(t *testing.T) {
	t.Parallel()
	f := newFixture(t, true)
	f.cfg.Keys.ExpiryWarningDays = 30
	f.cfg.Metrics.Listen = []string{freeAddr(t)}
	s := f.state()
	qtsp := testpki.NewCA(t, "QTSP")
	k, err := rsaKey()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	ends := map[string]time.Time{"soon.key": now.Add(10*24*time.Hour + time.Hour), "old.key": now.Add(-24 * time.Hour), "fine.key": now.Add(90 * 24 * time.Hour)}
	for id, end := range ends {
		cert := qtsp.Issue(t, k.Public(), testpki.Leaf{Subject: pkix.Name{CommonName: id}, ExtUsage: []x509.ExtKeyUsage{},
			NotBefore: now.Add(-100 * 24 * time.Hour), NotAfter: end})
		if _, err := s.Keys.Import(context.Background(), id, k, keys.ImportOptions{Chain: []*x509.Certificate{cert}}); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	f.writePolicy(policy.Rule{Name: "tpp", CN: "tpp", Keys: []string{"*"}, Ops: []string{"jws"}})
	r := f.start(daemon.Deps{})
	soon := fmt.Sprintf("key soon.key: its certificate expires on %s, in 10 days: attach a renewed one (brokerd key cert)", ends["soon.key"].Format(time.RFC3339))
	old := fmt.Sprintf("key old.key: its certificate expired on %s; the signing helpers refuse it: attach a renewed one (brokerd key cert)", ends["old.key"].Format(time.RFC3339))
	r.logs.wait(t, 1, "certificate expiry", soon)
	r.logs.wait(t, 1, "certificate expiry", old)
	if n, _ := r.logs.count("fine.key"); n != 0 {
		t.Errorf("fine.key is in the log:\n%s", r.logs)
	}
	c := f.client(f.byoClient("tpp"))
	want := `{"result":"ok","details":{"warnings":["` + old + `","` + soon + `"]}}`
	if resp := do(t, c, "GET", r.url("/health?details"), "", ""); resp.status != 200 || resp.body != want {
		t.Errorf("/health?details: %d %s\nwant %s", resp.status, resp.body, want)
	}
	for _, tc := range []struct {
		c    bool
		path string
	}{{true, "/health"}, {false, "/health?details"}} {
		cl := f.client(nil)
		if tc.c {
			cl = c
		}
		if resp := do(t, cl, "GET", r.url(tc.path), "", ""); resp.body != `{"result":"ok"}` {
			t.Errorf("%s (client certificate %v): %s", tc.path, tc.c, resp.body)
		}
	}
	metrics := do(t, f.client(nil), "GET", "http://"+f.cfg.Metrics.Listen[0]+"/metrics", "", "").body
	for _, line := range []string{`brokerd_certificate_expiry_warning{key="fine.key"} 0`, `brokerd_certificate_expiry_warning{key="old.key"} 1`,
		`brokerd_certificate_expiry_warning{key="soon.key"} 1`} {
		if !strings.Contains(metrics, line+"\n") {
			t.Errorf("metrics lack %q", line)
		}
	}
	resp := do(t, c, "POST", r.url("/jws"), "application/json", `{"params":{"key_id":"old.key","payload":"x"}}`)
	if wantRefusal := `{"code":403,"message":"Certificate expired","data":"the certificate of key \"old.key\" expired on ` +
		ends["old.key"].Format(time.RFC3339) + `: attach a renewed one (brokerd key cert)"}`; resp.status != 403 || resp.body != wantRefusal {
		t.Errorf("/jws with old.key: %d %s", resp.status, resp.body)
	}
}

// freeAddr is a loopback address no one listens on (for a listener the
// daemon opens by address).
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
