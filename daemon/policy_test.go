package daemon_test

import (
	"crypto/x509"
	"testing"

	"github.com/brokerd/brokerd/daemon"
	"github.com/brokerd/brokerd/pki"
	"github.com/brokerd/brokerd/policy"
	"github.com/brokerd/brokerd/tpm"
)

// TestPolicyChangesTakeEffect: a changed policy file is in force without
// a restart, at once with ReloadPolicy (what an admin command calls) or at
// the watcher's next look; a broken one keeps the rules in force, on
// record.
func TestPolicyChangesTakeEffect(t *testing.T) {
	t.Parallel()
	f := newFixture(t, true)
	s := f.state()
	addKey(t, s, "ec.key", tpm.P256)
	s.Close()
	f.writePolicy(signRule("one", "agg-1", "ec.key"))
	r := f.start(daemon.Deps{})
	agg1, agg2 := f.client(f.byoClient("agg-1")), f.client(f.byoClient("agg-2"))
	want := func(when string, status1, status2 int) {
		t.Helper()
		if got1, got2 := sign(t, agg1, r, "ec.key").status, sign(t, agg2, r, "ec.key").status; got1 != status1 || got2 != status2 {
			t.Fatalf("%s: agg-1 %d, agg-2 %d; want %d and %d", when, got1, got2, status1, status2)
		}
	}
	want("at start", 200, 403)
	f.writePolicy(signRule("two", "agg-2", "ec.key"))
	r.logs.wait(t, 2, "policy loaded") // at start, and now
	want("after the watcher saw the change", 403, 200)

	replace(t, f.cfg.Policy.File, []byte("[[rule]]\nname = \"x\"\nbogus = 1\n"))
	r.logs.wait(t, 1, "policy file changed but does not load; keeping what is in force")
	want("with a broken file", 403, 200)

	f.writePolicy(signRule("one", "agg-1", "ec.key"))
	if err := r.ReloadPolicy(); err != nil {
		t.Fatal(err)
	}
	want("after ReloadPolicy", 200, 403)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	var statuses []int
	for _, rec := range auditRecords(t, f.cfg.StatePath()) {
		if rec.Op == "admin.policy.reload" {
			statuses = append(statuses, rec.Status)
		}
	}
	if len(statuses) < 3 || statuses[0] != 200 || statuses[1] != 500 || statuses[len(statuses)-1] != 200 {
		t.Fatalf("admin.policy.reload statuses %v: want 200, 500, then 200", statuses)
	}
}

// TestRolesFromTheConfiguredExtension: with policy.role_oid set, brokerd's
// CA writes client roles in that extension and rules match them there.
func TestRolesFromTheConfiguredExtension(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false)
	f.cfg.Policy.RoleOID = "1.3.6.1.4.1.99999.1"
	role := "https://directory.example/roles/signer"
	s := f.state()
	addKey(t, s, "ec.key", tpm.P256)
	withRole := issueClient(t, s, pki.Client{Name: "with-role", Roles: []string{role}})
	without := issueClient(t, s, pki.Client{Name: "without"})
	s.Close()
	f.writePolicy(policy.Rule{Name: "by-role", Role: role, Keys: []string{"ec.key"}, Ops: []string{"sign"}})
	r := f.start(daemon.Deps{})
	if resp := sign(t, f.client(withRole), r, "ec.key"); resp.status != 200 {
		t.Fatalf("with the role: %d %s", resp.status, resp.body)
	}
	if resp := sign(t, f.client(without), r, "ec.key"); resp.status != 403 {
		t.Fatalf("without: %d %s", resp.status, resp.body)
	}
	if len(policy.IdentityOf([]*x509.Certificate{withRole.Leaf}).Roles) != 0 {
		t.Fatal("the roles are under ib1Roles, not the configured extension")
	}
}
