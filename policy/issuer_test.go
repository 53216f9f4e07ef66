package policy_test

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"testing"

	"github.com/brokerd/brokerd/internal/testpki"
	"github.com/brokerd/brokerd/policy"
)

// TestIssuerOnlyFromTheVerifiedChain: a rule pinned by --issuer matches a
// client whose verified chain holds that CA, never a lone leaf whose own
// issuer field names it.
func TestIssuerOnlyFromTheVerifiedChain(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t, "Trusted Client CA")
	leaf, _ := ca.IssueKey(t, testpki.Leaf{Subject: pkix.Name{CommonName: "agg"}, ExtUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	p := &policy.Policy{}
	if err := p.Put(policy.Rule{Name: "r", CN: "agg", Issuer: "CN=Trusted Client CA,O=brokerd tests", Keys: []string{"*"}, Ops: []string{"sign"}}); err != nil {
		t.Fatal(err)
	}
	req := policy.Request{Op: policy.OpSign, KeyNames: []string{"k"}}
	if d := p.Decide(policy.IdentityOf([]*x509.Certificate{leaf, ca.Cert}), req); !d.Allow {
		t.Fatalf("verified chain: %s", d.Reason)
	}
	if d := p.Decide(policy.IdentityOf([]*x509.Certificate{leaf}), req); d.Allow {
		t.Fatal("a lone leaf matched by its own issuer field")
	}
}
