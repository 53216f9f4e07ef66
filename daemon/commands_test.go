package daemon_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/brokerd/brokerd/audit"
	"github.com/brokerd/brokerd/config"
	"github.com/brokerd/brokerd/daemon"
	"github.com/brokerd/brokerd/internal/testpki"
	"github.com/brokerd/brokerd/policy"
	"github.com/brokerd/brokerd/store"
)

var ctx = context.Background()

func TestInitConfig(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	path, cfg, err := daemon.InitConfig(daemon.InitOptions{Dir: "etc", OwnCA: true})
	if err != nil {
		t.Fatal(err)
	}
	def := config.Default()
	if path != filepath.Join(dir, "etc", "brokerd.toml") || cfg.StateDir != filepath.Join(dir, "etc", "state") ||
		cfg.TPM.Address != def.TPM.Address || cfg.Admin.Socket != def.Admin.Socket || !slices.Equal(cfg.API.Listen, def.API.Listen) ||
		!slices.Contains(cfg.PKI.ServerNames, "localhost") || !slices.Contains(cfg.PKI.ServerNames, "127.0.0.1") {
		t.Errorf("defaults: %s %+v", path, cfg)
	}
	_, cfg, err = daemon.InitConfig(daemon.InitOptions{Dir: "/etc/brokerd", TPM: "swtpm:/s", StateDir: "st", AdminSocket: "a.sock",
		Listen: []string{"127.0.0.1:1"}, HealthListen: []string{"127.0.0.1:2"}, ServerNames: []string{"b.example"}, OwnCA: true})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.StateDir != filepath.Join(dir, "st") || cfg.Admin.Socket != filepath.Join(dir, "a.sock") || cfg.TPM.Address != "swtpm:/s" ||
		!slices.Equal(cfg.API.Listen, []string{"127.0.0.1:1"}) || !slices.Equal(cfg.Health.Listen, []string{"127.0.0.1:2"}) ||
		!slices.Equal(cfg.PKI.ServerNames, []string{"b.example"}) {
		t.Errorf("choices: %+v", cfg)
	}
	if _, cfg, _ = daemon.InitConfig(daemon.InitOptions{Dir: "x", ServerNames: []string{"b.example"}}); len(cfg.PKI.ServerNames) != 0 {
		t.Errorf("server names without brokerd's CA: %v", cfg.PKI.ServerNames)
	}
}

// offline is a configuration whose state file exists and holds key
// qwac.key (alias qwac.crt), with no daemon running.
func offline(t *testing.T) *config.Config {
	t.Helper()
	dir := t.TempDir()
	cfg := config.Default()
	cfg.StateDir, cfg.Policy.File, cfg.Bank.TrustDir = dir, filepath.Join(dir, "policy.toml"), filepath.Join(dir, "bank-cas")
	st, err := store.Open(cfg.StatePath(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.PutKey(store.KeyRecord{ID: "qwac.key", Aliases: []string{"qwac.crt"}, Data: []byte("{}")}, false); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// records returns the ops of the audit log of cfg's state file.
func records(t *testing.T, cfg *config.Config) []string {
	t.Helper()
	l, _, release, err := audit.OpenFile(cfg.StatePath(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	var ops []string
	l.Records(time.Time{}, time.Time{}, func(r audit.Record, _ []byte) error {
		ops = append(ops, r.Op+" "+r.Client)
		return nil
	})
	return ops
}

// TestChangesWithoutDaemon: policy and trust changes made while no daemon
// runs are saved and recorded in the state file; a rule naming keys that
// do not exist is saved, and they are named.
func TestChangesWithoutDaemon(t *testing.T) {
	t.Parallel()
	cfg := offline(t)
	r := policy.Rule{Name: "agg", CN: "agg", Keys: []string{"qwac.crt", "nosuch.key", "*"}, Ops: []string{"sign"}}
	warnings, err := daemon.PutRule(ctx, cfg, nil, "tester", r)
	if err != nil || !slices.Equal(warnings, []string{`no key is called "nosuch.key" (yet): brokerd key list shows the keys`}) {
		t.Fatalf("PutRule: %v, %v", warnings, err)
	}
	if p, err := policy.Load(cfg.Policy.File); err != nil || len(p.Rules) != 1 {
		t.Fatalf("policy file: %v, %v", p, err)
	}
	ca := testpki.NewCA(t, "Bank CA")
	fp, err := daemon.AddTrust(ctx, cfg, nil, "tester", []*x509.Certificate{ca.Cert}, "https://bank.example")
	if err != nil {
		t.Fatal(err)
	}
	if removed, err := daemon.RemoveTrust(ctx, cfg, nil, "tester", fp[:12]); err != nil || removed != fp {
		t.Fatalf("RemoveTrust: %v, %v", removed, err)
	}
	if err := daemon.RemoveRule(ctx, cfg, nil, "tester", "agg"); err != nil {
		t.Fatal(err)
	}
	if err := daemon.RemoveRule(ctx, cfg, nil, "tester", "agg"); err == nil {
		t.Error("removing a rule twice succeeded")
	}
	want := []string{"admin.policy.allow tester", "admin.trust.add tester", "admin.trust.remove tester", "admin.policy.remove tester"}
	if got := records(t, cfg); !slices.Equal(got, want) {
		t.Errorf("records %q, want %q", got, want)
	}

	// A state file that another process holds (a daemon without its admin
	// socket) is left to it: the change is made, the record is its.
	st, err := store.Open(cfg.StatePath(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := daemon.PutRule(ctx, cfg, nil, "tester", r); err != nil {
		t.Errorf("PutRule beside a daemon: %v", err)
	}
	st.Close()
	if got := records(t, cfg); len(got) != len(want) {
		t.Errorf("records beside a daemon: %q", got)
	}
}

// TestDecidePolicy: a rule naming a key's alias allows the key by its id
// (names come from the state file); a certificate the daemon refuses at
// the handshake (another CA, revoked on a CRL) is denied whatever the
// rules say.
func TestDecidePolicy(t *testing.T) {
	t.Parallel()
	cfg := offline(t)
	if _, err := daemon.PutRule(ctx, cfg, nil, "tester", policy.Rule{Name: "agg", AnyClient: true, Keys: []string{"qwac.crt"}, Ops: []string{"sign"}}); err != nil {
		t.Fatal(err)
	}
	ca, other := testpki.NewCA(t, "Client CA"), testpki.NewCA(t, "Other CA")
	cfg.API.ClientCA = testpki.WriteFile(t, filepath.Join(cfg.StateDir, "client-ca.pem"), testpki.CertPEM(ca.Cert))
	leaf, _ := ca.IssueKey(t, testpki.Leaf{Subject: pkix.Name{CommonName: "agg"}})
	revoked, _ := ca.IssueKey(t, testpki.Leaf{Subject: pkix.Name{CommonName: "gone"}})
	stranger, _ := other.IssueKey(t, testpki.Leaf{Subject: pkix.Name{CommonName: "agg"}})
	crl, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: time.Now(), NextUpdate: time.Now().Add(time.Hour),
		RevokedCertificateEntries: []x509.RevocationListEntry{{SerialNumber: revoked.SerialNumber, RevocationTime: time.Now()}}}, ca.Cert, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	cfg.API.CRLFiles = []string{testpki.WriteFile(t, filepath.Join(cfg.StateDir, "crl.der"), crl)}
	for _, c := range []struct {
		cert  *x509.Certificate
		key   string
		allow bool
		why   string
	}{
		{leaf, "qwac.key", true, "agg"},
		{leaf, "qwac.crt", true, "agg"},
		{leaf, "other.key", false, "does not allow key"},
		{revoked, "qwac.key", false, "certificate revoked: client certificate (serial "},
		{stranger, "qwac.key", false, "the daemon refuses this certificate at the handshake: x509: certificate signed by unknown authority"},
	} {
		id, req, d, err := daemon.DecidePolicy(cfg, nil, []*x509.Certificate{c.cert}, policy.Request{Op: "sign", KeyNames: []string{c.key}})
		if err != nil || d.Allow != c.allow || !strings.Contains(d.Reason+d.Rule, c.why) || id.Subject != c.cert.Subject.String() {
			t.Errorf("%s %s: %+v %v", c.cert.Subject, c.key, d, err)
		}
		if c.allow && !slices.Equal(req.KeyNames, []string{"qwac.key", "qwac.crt"}) {
			t.Errorf("%s: names %v", c.key, req.KeyNames)
		}
	}
	os.WriteFile(cfg.Policy.File, []byte("nonsense ="), 0o644)
	if _, _, _, err := daemon.DecidePolicy(cfg, nil, []*x509.Certificate{leaf}, policy.Request{Op: "sign", KeyNames: []string{"k"}}); err == nil ||
		!strings.Contains(err.Error(), "policy") {
		t.Errorf("a broken policy file: %v", err)
	}
}
