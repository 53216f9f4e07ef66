package policy_test

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/brokerd/brokerd/internal/origin"
	"github.com/brokerd/brokerd/internal/testpki"
	"github.com/brokerd/brokerd/policy"
)

func TestIdentityOf(t *testing.T) {
	t.Parallel()
	root := testpki.NewCA(t, "Root CA")
	interCert, interKey := root.IssueKey(t, testpki.Leaf{Subject: pkix.Name{CommonName: "Issuing CA"}, IsCA: true})
	inter := &testpki.CA{Cert: interCert, Key: interKey}
	u, _ := url.Parse("https://directory.example/app/1")
	leaf, _ := inter.IssueKey(t, testpki.Leaf{
		Subject:  pkix.Name{CommonName: "agg-1", OrganizationalUnit: []string{"aggregation"}},
		DNSNames: []string{"agg-1.lan"},
		URIs:     []*url.URL{u},
	})
	id := policy.IdentityOf([]*x509.Certificate{leaf, interCert, root.Cert})
	if id.CN != "agg-1" || id.OUs[0] != "aggregation" || id.DNSNames[0] != "agg-1.lan" || id.URIs[0] != u.String() {
		t.Fatalf("identity %+v", id)
	}
	if len(id.Fingerprint) != 64 || strings.ToLower(id.Fingerprint) != id.Fingerprint {
		t.Fatalf("fingerprint %q", id.Fingerprint)
	}
	if len(id.Issuers) != 2 || !strings.HasPrefix(id.Issuers[0], "CN=Issuing CA") || !strings.HasPrefix(id.Issuers[1], "CN=Root CA") {
		t.Fatalf("issuers %v", id.Issuers)
	}
}

func TestDecide(t *testing.T) {
	t.Parallel()
	agg := policy.Identity{Subject: "CN=agg", CN: "agg", OUs: []string{"ops"}, Fingerprint: strings.Repeat("ab", 32), Issuers: []string{"CN=Client CA,O=Example Oy"}}
	other := policy.Identity{Subject: "CN=other", CN: "other", Fingerprint: strings.Repeat("cd", 32), Issuers: []string{"CN=Other CA"}}
	p := &policy.Policy{Rules: []policy.Rule{
		{Name: "agg-sign", CN: "agg", Keys: []string{"qseal.key"}, Ops: []string{"sign"}},
		{Name: "agg-banks", Fingerprint: strings.Repeat("AB", 32), Keys: []string{"qwac.key"}, Ops: []string{"makeRequest"},
			Origins: []string{"https://api.bank.example", "https://*.psd2.example:8443"}},
		{Name: "ca-wide", Issuer: "/O=Example Oy/CN=Client CA", OU: "ops", Keys: []string{"*"}, Ops: []string{"sign"}},
	}}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	origin := func(s string) *origin.Origin {
		o, err := origin.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	cases := []struct {
		name string
		id   policy.Identity
		req  policy.Request
		rule string // "" = denied
	}{
		{"sign with granted key", agg, policy.Request{Op: policy.OpSign, KeyNames: []string{"qseal.key"}}, "agg-sign"},
		{"sign via issuer+ou rule", agg, policy.Request{Op: policy.OpSign, KeyNames: []string{"other.key"}}, "ca-wide"},
		{"granted by alias", agg, policy.Request{Op: policy.OpMakeRequest, KeyNames: []string{"x", "qwac.key"}, Origin: origin("https://api.bank.example")}, "agg-banks"},
		{"wildcard origin", agg, policy.Request{Op: policy.OpMakeRequest, KeyNames: []string{"qwac.key"}, Origin: origin("https://a.psd2.example:8443")}, "agg-banks"},
		{"wildcard does not match apex", agg, policy.Request{Op: policy.OpMakeRequest, KeyNames: []string{"qwac.key"}, Origin: origin("https://psd2.example:8443")}, ""},
		{"wrong port", agg, policy.Request{Op: policy.OpMakeRequest, KeyNames: []string{"qwac.key"}, Origin: origin("https://api.bank.example:444")}, ""},
		{"wrong scheme", agg, policy.Request{Op: policy.OpMakeRequest, KeyNames: []string{"qwac.key"}, Origin: origin("http://api.bank.example:443")}, ""},
		{"op not granted", agg, policy.Request{Op: policy.OpMakeRequest, KeyNames: []string{"qseal.key"}, Origin: origin("https://api.bank.example")}, ""},
		{"unknown client", other, policy.Request{Op: policy.OpSign, KeyNames: []string{"qseal.key"}}, ""},
	}
	for _, c := range cases {
		d := p.Decide(c.id, c.req)
		if d.Allow != (c.rule != "") || d.Rule != c.rule || d.Reason == "" {
			t.Errorf("%s: %+v, want rule %q", c.name, d, c.rule)
		}
	}
	if d := p.Decide(other, policy.Request{Op: policy.OpSign, KeyNames: []string{"k"}}); !strings.Contains(d.Reason, "no rule matches client CN=other") {
		t.Errorf("deny reason %q", d.Reason)
	}
	if d := p.Decide(agg, policy.Request{Op: policy.OpMakeRequest, KeyNames: []string{"qwac.key"}, Origin: origin("https://evil.example")}); !strings.Contains(d.Reason, "does not allow origin https://evil.example:443") {
		t.Errorf("deny reason %q", d.Reason)
	}
	if !p.Allowed(agg, []string{"qwac.key"}) || p.Allowed(other, []string{"qseal.key"}) {
		t.Error("Allowed")
	}
	if (&policy.Policy{}).Decide(agg, policy.Request{Op: policy.OpSign, KeyNames: []string{"k"}}).Allow {
		t.Error("an empty policy allowed something")
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	bad := []policy.Rule{
		{Name: "", CN: "a", Keys: []string{"*"}, Ops: []string{"*"}},
		{Name: "no-matcher", Keys: []string{"*"}, Ops: []string{"*"}},
		{Name: "no-keys", CN: "a", Ops: []string{"*"}},
		{Name: "no-ops", CN: "a", Keys: []string{"*"}},
		{Name: "bad-op", CN: "a", Keys: []string{"*"}, Ops: []string{"delete"}},
		{Name: "bad-fp", Fingerprint: "abc", Keys: []string{"*"}, Ops: []string{"*"}},
		{Name: "bad-issuer", Issuer: "XX=1", Keys: []string{"*"}, Ops: []string{"*"}},
		{Name: "bad-origin", CN: "a", Keys: []string{"*"}, Ops: []string{"*"}, Origins: []string{"ftp://x"}},
		{Name: "origin-path", CN: "a", Keys: []string{"*"}, Ops: []string{"*"}, Origins: []string{"https://x/path"}},
	}
	for _, r := range bad {
		if err := (&policy.Policy{Rules: []policy.Rule{r}}).Validate(); err == nil {
			t.Errorf("rule %q validated", r.Name)
		}
	}
	twice := &policy.Policy{Rules: []policy.Rule{{Name: "a", AnyClient: true, Keys: []string{"*"}, Ops: []string{"*"}}, {Name: "a", AnyClient: true, Keys: []string{"*"}, Ops: []string{"*"}}}}
	if err := twice.Validate(); err == nil {
		t.Error("duplicate names validated")
	}
}

func TestSaveLoadAndWatch(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "policy.toml")
	e, err := policy.NewEngine(path, nil)
	if err != nil {
		t.Fatalf("missing file: %v", err)
	}
	if len(e.Policy().Rules) != 0 {
		t.Fatal("a missing policy file allows something")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reloads := make(chan error, 10)
	go e.Watch(ctx, 10*time.Millisecond, func(err error) { reloads <- err })
	nextReload := func() error {
		t.Helper()
		select {
		case err := <-reloads:
			return err
		case <-time.After(5 * time.Second):
			t.Fatal("no reload reported")
			return nil
		}
	}

	p := &policy.Policy{}
	if err := p.Put(policy.Rule{Name: "r1", CN: "agg", Keys: []string{"qseal.key"}, Ops: []string{"sign"}, Origins: []string{"https://Bank.Example"}}); err != nil {
		t.Fatal(err)
	}
	if err := p.Save(path); err != nil {
		t.Fatal(err)
	}
	if err := nextReload(); err != nil {
		t.Fatalf("reload reported %v", err)
	}
	if len(e.Policy().Rules) != 1 {
		t.Fatal("the reloaded rule is not in force")
	}
	if got := e.Policy().Rules[0].Origins[0]; got != "https://bank.example:443" {
		t.Fatalf("origin normalised to %q", got)
	}
	// A broken file keeps the rules in force. (Written by rename, as an
	// editor does: a poll between a truncate and a write would see an
	// empty file, a valid one.)
	tmp := path + ".tmp"
	os.WriteFile(tmp, []byte("[[rule]]\nname = \"x\"\nbogus = 1\n"), 0o600)
	os.Rename(tmp, path)
	if err := nextReload(); err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Fatalf("reload of a broken file reported %v", err)
	}
	if len(e.Policy().Rules) != 1 {
		t.Fatal("a broken policy file replaced the rules in force")
	}
	if _, err := policy.Load(path); err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Fatalf("Load of an unknown key: %v", err)
	}
	if err := p.Remove("r1"); err != nil {
		t.Fatal(err)
	}
	if err := p.Remove("r1"); err == nil {
		t.Fatal("removed a missing rule")
	}
	if err := p.Save(path); err != nil {
		t.Fatal(err)
	}
	if err := nextReload(); err != nil || len(e.Policy().Rules) != 0 {
		t.Fatalf("after removing the rule: %v, %d rules in force", err, len(e.Policy().Rules))
	}
}
