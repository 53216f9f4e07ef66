package policy_test

import (
	"strings"
	"testing"

	"github.com/brokerd/brokerd/policy"
)

// TestAllowPrivateNeedsExactOrigins: a rule that opens private addresses
// names the exact origins it opens; a wildcard, '*' or no origin at all
// is refused.
func TestAllowPrivateNeedsExactOrigins(t *testing.T) {
	t.Parallel()
	cases := []struct {
		origins []string
		errPart string
	}{
		{[]string{"https://sandbox.bank.lan"}, ""},
		{[]string{"https://10.0.0.5:8443", "https://sandbox.bank.lan"}, ""},
		{[]string{"*"}, `origin "*"`},
		{[]string{"https://*.bank.lan"}, "never a wildcard"},
		{[]string{"https://sandbox.bank.lan", "https://*.other.lan"}, "never a wildcard"},
		{nil, "without origins"},
	}
	for _, c := range cases {
		p := &policy.Policy{}
		err := p.Put(policy.Rule{Name: "r", CN: "agg", Keys: []string{"*"}, Ops: []string{"makeRequest"}, Origins: c.origins, AllowPrivate: true})
		if (err == nil) != (c.errPart == "") || (err != nil && !strings.Contains(err.Error(), c.errPart)) {
			t.Errorf("origins %v: %v, want %q", c.origins, err, c.errPart)
		}
	}
}
