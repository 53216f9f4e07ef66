package policy_test

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/brokerd/brokerd/internal/testpki"
	"github.com/brokerd/brokerd/policy"
)

const (
	roleAgg  = "https://directory.example/roles/aggregator"
	roleSign = "https://directory.example/roles/signer"
)

func roleExtension(t *testing.T, oid asn1.ObjectIdentifier, roles ...string) pkix.Extension {
	t.Helper()
	ext, err := policy.RoleExtension(oid, roles)
	if err != nil {
		t.Fatal(err)
	}
	return ext
}

func TestIdentityRoles(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t, "Client CA")
	custom := asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 7}
	ib1, err := policy.ParseRoleOID(policy.DefaultRoleOID)
	if err != nil {
		t.Fatal(err)
	}
	piAI := testpki.PSD2Roles(t, "PSP_PI", "PSP_AI")
	ai, ic := testpki.PSD2Roles(t, "PSP_AI"), testpki.PSD2Roles(t, "PSP_IC")
	mismatched := []testpki.PSD2Role{{OID: ai[0].OID, Name: "PSP_PI"}, ic[0]}
	cases := []struct {
		name  string
		opts  policy.IdentityOptions
		extra []pkix.Extension
		roles []string
		psd2  []string
		ncaID string
	}{
		{"ib1Roles", policy.IdentityOptions{}, []pkix.Extension{roleExtension(t, ib1, roleAgg, roleSign)}, []string{roleAgg, roleSign}, nil, ""},
		{"ib1Roles, OID given", policy.IdentityOptions{RoleOID: ib1}, []pkix.Extension{roleExtension(t, nil, roleSign, roleAgg)}, []string{roleSign, roleAgg}, nil, ""},
		{"custom OID configured", policy.IdentityOptions{RoleOID: custom}, []pkix.Extension{roleExtension(t, custom, roleAgg, roleSign)}, []string{roleAgg, roleSign}, nil, ""},
		{"ib1Roles while a custom OID is configured", policy.IdentityOptions{RoleOID: custom}, []pkix.Extension{roleExtension(t, nil, roleAgg)}, nil, nil, ""},
		{"roles under another OID than ib1Roles", policy.IdentityOptions{}, []pkix.Extension{roleExtension(t, custom, roleAgg)}, nil, nil, ""},
		{"PSD2 after QcCompliance and QcType", policy.IdentityOptions{}, []pkix.Extension{testpki.PSD2QCStatements(t, piAI, "Financial Conduct Authority", "GB-FCA")}, nil, []string{"PSP_PI", "PSP_AI"}, "GB-FCA"},
		{"PSD2 flattened", policy.IdentityOptions{}, []pkix.Extension{testpki.PSD2QCStatementsFlattened(t, piAI, "Financial Conduct Authority", "GB-FCA")}, nil, nil, ""},
		{"PSD2 name disagrees with OID", policy.IdentityOptions{}, []pkix.Extension{testpki.PSD2QCStatements(t, mismatched, "Financial Conduct Authority", "GB-FCA")}, nil, []string{"PSP_IC"}, "GB-FCA"},
		{"both", policy.IdentityOptions{}, []pkix.Extension{roleExtension(t, nil, roleAgg), testpki.PSD2QCStatements(t, ai, "Finansinspektionen", "SE-FINA")}, []string{roleAgg}, []string{"PSP_AI"}, "SE-FINA"},
		{"garbage in both", policy.IdentityOptions{}, []pkix.Extension{
			{Id: ib1, Value: []byte("\x30\x05\x0c\x05ab")},
			{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 3}, Value: []byte("garbage")},
		}, nil, nil, ""},
		{"neither", policy.IdentityOptions{}, nil, nil, nil, ""},
	}
	for _, c := range cases {
		leaf, _ := ca.IssueKey(t, testpki.Leaf{Subject: pkix.Name{CommonName: "app"}, Extra: c.extra})
		chain := []*x509.Certificate{leaf, ca.Cert}
		id := c.opts.Of(chain)
		if !reflect.DeepEqual(id.Roles, c.roles) || !reflect.DeepEqual(id.PSD2Roles, c.psd2) || id.NCAID != c.ncaID {
			t.Errorf("%s: roles %q psd2 %q nca %q; want %q %q %q", c.name, id.Roles, id.PSD2Roles, id.NCAID, c.roles, c.psd2, c.ncaID)
		}
		if len(c.opts.RoleOID) == 0 && !reflect.DeepEqual(policy.IdentityOf(chain), id) {
			t.Errorf("%s: IdentityOf differs from the default options", c.name)
		}
	}
}

func TestIdentityJSON(t *testing.T) {
	t.Parallel()
	id := policy.Identity{Subject: "CN=app", Fingerprint: "ab", Roles: []string{roleAgg}, PSD2Roles: []string{"PSP_AI"}, NCAID: "GB-FCA"}
	b, _ := json.Marshal(id)
	want := `{"subject":"CN=app","fingerprint":"ab","roles":["https://directory.example/roles/aggregator"],"psd2_roles":["PSP_AI"],"nca_id":"GB-FCA"}`
	if string(b) != want {
		t.Errorf("JSON\n got %s\nwant %s", b, want)
	}
	if b, _ := json.Marshal(policy.Identity{Subject: "CN=app"}); string(b) != `{"subject":"CN=app","fingerprint":""}` {
		t.Errorf("JSON without roles: %s", b)
	}
}

func TestParseRoleOID(t *testing.T) {
	t.Parallel()
	good := []struct {
		in   string
		want asn1.ObjectIdentifier
	}{
		{policy.DefaultRoleOID, asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 62329, 1, 1}},
		{"2.999.1", asn1.ObjectIdentifier{2, 999, 1}},
		{"0.39", asn1.ObjectIdentifier{0, 39}},
	}
	for _, c := range good {
		if got, err := policy.ParseRoleOID(c.in); err != nil || !got.Equal(c.want) {
			t.Errorf("%q: %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	bad := []struct{ in, err string }{
		{"", `policy: role OID is empty (leave it out for ib1Roles, 1.3.6.1.4.1.62329.1.1)`},
		{"1", `policy: role OID "1": an OID has at least two arcs`},
		{"1.2.x", `policy: role OID "1.2.x": arc "x" is not a decimal number`},
		{"1..2", `policy: role OID "1..2": arc "" is not a decimal number`},
		{"1.2.", `policy: role OID "1.2.": arc "" is not a decimal number`},
		{"+1.2", `policy: role OID "+1.2": arc "+1" is not a decimal number`},
		{"1.-2", `policy: role OID "1.-2": arc "-2" is not a decimal number`},
		{"1.02", `policy: role OID "1.02": arc "02" is not a decimal number`},
		{" 1.2", `policy: role OID " 1.2": arc " 1" is not a decimal number`},
		{"1.2.99999999999999999999", `policy: role OID "1.2.99999999999999999999": arc "99999999999999999999" is not a decimal number`},
		{"3.1", `policy: role OID "3.1": the first arc must be 0, 1 or 2, and the second below 40 unless the first is 2`},
		{"1.40", `policy: role OID "1.40": the first arc must be 0, 1 or 2, and the second below 40 unless the first is 2`},
	}
	for _, c := range bad {
		if _, err := policy.ParseRoleOID(c.in); err == nil || err.Error() != c.err {
			t.Errorf("%q: %v\nwant %s", c.in, err, c.err)
		}
	}
}

func TestRoleExtension(t *testing.T) {
	t.Parallel()
	ext := roleExtension(t, nil, "https://a.example/r", "https://b.example/r?x=%C3%BC")
	// SEQUENCE { UTF8String "https://a.example/r", UTF8String "https://b.example/r?x=%C3%BC" }
	want := "3033" + "0c13" + hex.EncodeToString([]byte("https://a.example/r")) + "0c1c" + hex.EncodeToString([]byte("https://b.example/r?x=%C3%BC"))
	if ext.Id.String() != policy.DefaultRoleOID || ext.Critical || hex.EncodeToString(ext.Value) != want {
		t.Errorf("extension %s critical %v value %x, want %s", ext.Id, ext.Critical, ext.Value, want)
	}
	custom := asn1.ObjectIdentifier{1, 2, 3}
	if ext := roleExtension(t, custom, roleAgg); !ext.Id.Equal(custom) {
		t.Errorf("extension %s, want 1.2.3", ext.Id)
	}
	bad := []struct {
		oid   asn1.ObjectIdentifier
		roles []string
		err   string
	}{
		{nil, nil, "policy: role extension: no roles: give at least one role URL"},
		{nil, []string{}, "policy: role extension: no roles: give at least one role URL"},
		{nil, []string{"/roles/x"}, `policy: role extension: role "/roles/x" is not an absolute URL (want scheme://host/..., e.g. https://directory.example/roles/x)`},
		{nil, []string{"directory.example/roles/x"}, `policy: role extension: role "directory.example/roles/x" is not an absolute URL (want scheme://host/..., e.g. https://directory.example/roles/x)`},
		{nil, []string{"urn:ib1:role:x"}, `policy: role extension: role "urn:ib1:role:x" is not an absolute URL (want scheme://host/..., e.g. https://directory.example/roles/x)`},
		{nil, []string{"https://exa mple/x"}, `policy: role extension: role "https://exa mple/x" is not a URL: parse "https://exa mple/x": invalid character " " in host name`},
		{nil, []string{"HTTPS://directory.example/x"}, `policy: role extension: role "HTTPS://directory.example/x" is not in canonical form: write it "https://directory.example/x"`},
		{nil, []string{"https://directory.example/a b"}, `policy: role extension: role "https://directory.example/a b" is not in canonical form: write it "https://directory.example/a%20b"`},
		{nil, []string{"https://directory.example/ü"}, `policy: role extension: role "https://directory.example/ü" is not in canonical form: write it "https://directory.example/%C3%BC"`},
		{nil, []string{roleAgg, roleSign, roleAgg}, `policy: role extension: role "https://directory.example/roles/aggregator" given twice`},
		{asn1.ObjectIdentifier{1}, []string{roleAgg}, "policy: role extension 1: an OID has at least two arcs"},
		{asn1.ObjectIdentifier{1, 2, -3}, []string{roleAgg}, "policy: role extension 1.2.-3: an OID has no negative arcs"},
		{asn1.ObjectIdentifier{3, 1}, []string{roleAgg}, "policy: role extension 3.1: the first arc must be 0, 1 or 2, and the second below 40 unless the first is 2"},
	}
	for _, c := range bad {
		if _, err := policy.RoleExtension(c.oid, c.roles); err == nil || err.Error() != c.err {
			t.Errorf("%v %q: %v\nwant %s", c.oid, c.roles, err, c.err)
		}
	}
}

func TestDecideRoles(t *testing.T) {
	t.Parallel()
	app := policy.Identity{Subject: "CN=app", CN: "app", Roles: []string{roleAgg, roleSign}}
	tpp := policy.Identity{Subject: "CN=tpp", CN: "tpp", PSD2Roles: []string{"PSP_PI", "PSP_AI"}, NCAID: "GB-FCA"}
	bare := policy.Identity{Subject: "CN=tpp", CN: "tpp"}
	p := &policy.Policy{Rules: []policy.Rule{
		{Name: "signers", Role: roleSign, Keys: []string{"qseal.key"}, Ops: []string{"sign"}},
		{Name: "ai", PSD2Role: "psp_ai", Keys: []string{"qwac.key"}, Ops: []string{"*"}},
		{Name: "tpp-as", CN: "tpp", PSD2Role: "PSP_AS", Keys: []string{"*"}, Ops: []string{"*"}},
		{Name: "aggregators", Role: roleAgg + "/", Keys: []string{"*"}, Ops: []string{"*"}},
	}}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		id   policy.Identity
		key  string
		rule string // "" = denied
	}{
		{"role URL", app, "qseal.key", "signers"},
		{"role URL matches exactly, not as a prefix", app, "other.key", ""},
		{"PSD2 role, normalised from lower case", tpp, "qwac.key", "ai"},
		{"every matcher must hold", tpp, "other.key", ""},
		{"no PSD2 role", bare, "qwac.key", ""},
		{"a PSD2 role is not a role URL", policy.Identity{Subject: "CN=x", Roles: []string{"PSP_AI"}}, "qwac.key", ""},
	}
	for _, c := range cases {
		d := p.Decide(c.id, policy.Request{Op: policy.OpSign, KeyNames: []string{c.key}})
		if d.Allow != (c.rule != "") || d.Rule != c.rule {
			t.Errorf("%s: %+v, want rule %q", c.name, d, c.rule)
		}
	}
	if p.Rules[1].PSD2Role != "PSP_AI" {
		t.Errorf("psd2_role normalised to %q", p.Rules[1].PSD2Role)
	}
}

func TestValidateRoleMatchers(t *testing.T) {
	t.Parallel()
	bad := []struct {
		rule policy.Rule
		err  string
	}{
		{policy.Rule{Name: "none", Keys: []string{"*"}, Ops: []string{"*"}},
			`rule "none": no matcher: give one of cn, san_uri, san_dns, ou, fingerprint, issuer, role, psd2_role, or any_client`},
		{policy.Rule{Name: "relative", Role: "roles/x", Keys: []string{"*"}, Ops: []string{"*"}},
			`rule "relative": role "roles/x" is not an absolute URL (want scheme://host/..., e.g. https://directory.example/roles/x)`},
		{policy.Rule{Name: "not-canonical", Role: "https://Directory.example:443/x y", Keys: []string{"*"}, Ops: []string{"*"}},
			`rule "not-canonical": role "https://Directory.example:443/x y" is not in canonical form: write it "https://Directory.example:443/x%20y"`},
		{policy.Rule{Name: "psd2", PSD2Role: "AISP", Keys: []string{"*"}, Ops: []string{"*"}},
			`rule "psd2": psd2_role "AISP" is not a PSD2 role: want PSP_AS, PSP_PI, PSP_AI or PSP_IC`},
		{policy.Rule{Name: "psd2-space", PSD2Role: "PSP_AI ", Keys: []string{"*"}, Ops: []string{"*"}},
			`rule "psd2-space": psd2_role "PSP_AI " is not a PSD2 role: want PSP_AS, PSP_PI, PSP_AI or PSP_IC`},
	}
	for _, c := range bad {
		if err := (&policy.Policy{Rules: []policy.Rule{c.rule}}).Validate(); err == nil || err.Error() != c.err {
			t.Errorf("%s: %v\nwant %s", c.rule.Name, err, c.err)
		}
	}
	for _, r := range []policy.Rule{
		{Name: "role-only", Role: roleAgg, Keys: []string{"*"}, Ops: []string{"*"}},
		{Name: "psd2-only", PSD2Role: "psp_ic", Keys: []string{"*"}, Ops: []string{"*"}},
	} {
		if err := (&policy.Policy{Rules: []policy.Rule{r}}).Validate(); err != nil {
			t.Errorf("%s: %v", r.Name, err)
		}
	}
}

func TestMatchers(t *testing.T) {
	t.Parallel()
	cases := []struct {
		rule policy.Rule
		want string
	}{
		{policy.Rule{}, ""},
		{policy.Rule{AnyClient: true}, "any-client"},
		{policy.Rule{CN: "agg", Role: roleAgg, PSD2Role: "PSP_AI"}, "cn=agg role=https://directory.example/roles/aggregator psd2-role=PSP_AI"},
		{policy.Rule{CN: "a", SANURI: "u", SANDNS: "d", OU: "o", Fingerprint: "f", Issuer: "CN=i", Role: "r", PSD2Role: "p", AnyClient: true},
			"cn=a san-uri=u san-dns=d ou=o fingerprint=f issuer=CN=i role=r psd2-role=p any-client"},
	}
	for _, c := range cases {
		if got := c.rule.Matchers(); got != c.want {
			t.Errorf("%+v: %q, want %q", c.rule, got, c.want)
		}
	}
}

func TestRoleMatchersInTheFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "policy.toml")
	p := &policy.Policy{}
	if err := p.Put(policy.Rule{Name: "tpp", Role: roleAgg, PSD2Role: "psp_pi", Keys: []string{"*"}, Ops: []string{"sign"}}); err != nil {
		t.Fatal(err)
	}
	if err := p.Save(path); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	for _, line := range []string{`  role = "https://directory.example/roles/aggregator"`, `  psd2_role = "PSP_PI"`} {
		if !strings.Contains(string(data), "\n"+line+"\n") {
			t.Errorf("the file lacks %s:\n%s", line, data)
		}
	}
	q, err := policy.Load(path)
	if err != nil || !reflect.DeepEqual(q.Rules, p.Rules) {
		t.Fatalf("loaded %+v, %v; want %+v", q, err, p.Rules)
	}
	os.WriteFile(path, []byte("[[rule]]\nname = \"x\"\npsd2_role = \"PSP_XX\"\nkeys = [\"*\"]\nops = [\"*\"]\n"), 0o600)
	if _, err := policy.Load(path); err == nil || !strings.HasSuffix(err.Error(), `rule "x": psd2_role "PSP_XX" is not a PSD2 role: want PSP_AS, PSP_PI, PSP_AI or PSP_IC`) {
		t.Fatalf("Load of a bad psd2_role: %v", err)
	}
}
