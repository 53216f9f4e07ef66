package bank_test

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/brokerd/brokerd/internal/testpki"
	"github.com/brokerd/brokerd/netstack/bank"
)

func TestTrustDirectory(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "bank-cas")
	global := testpki.NewCA(t, "Global Bank CA")
	scoped := testpki.NewCA(t, "Scoped Bank CA")
	fpGlobal, err := bank.AddTrust(dir, []*x509.Certificate{global.Cert}, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bank.AddTrust(dir, []*x509.Certificate{scoped.Cert}, "https://api.bank.example:443"); err != nil {
		t.Fatal(err)
	}
	ts, err := bank.NewTrustStore(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cas := ts.CAs(); len(cas) != 2 {
		t.Fatalf("CAs %+v", cas)
	}
	leaf := func(ca *testpki.CA, host string) []*x509.Certificate {
		c, _ := ca.IssueKey(t, testpki.Leaf{Subject: pkix.Name{CommonName: host}, DNSNames: []string{host}, ExtUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		return []*x509.Certificate{c}
	}
	cases := []struct {
		origin, host string
		chain        []*x509.Certificate
		ok           bool
	}{
		{"https://any.example:443", "any.example", leaf(global, "any.example"), true},
		{"https://api.bank.example:443", "api.bank.example", leaf(scoped, "api.bank.example"), true},
		{"https://other.example:443", "other.example", leaf(scoped, "other.example"), false},
		{"https://any.example:443", "wrong.example", leaf(global, "any.example"), false},
		{"https://any.example:443", "any.example", nil, false},
	}
	for _, c := range cases {
		err := ts.Verify(c.origin, c.host, c.chain)
		if (err == nil) != c.ok {
			t.Errorf("Verify(%s, %s) = %v, want ok=%v", c.origin, c.host, err, c.ok)
		}
	}
	for _, bad := range []string{"abc", "00000000"} {
		if _, err := bank.RemoveTrust(dir, bad); err == nil {
			t.Errorf("RemoveTrust(%q) succeeded", bad)
		}
	}
	if got, err := bank.RemoveTrust(dir, strings.ToUpper(fpGlobal[:12])); err != nil || got != fpGlobal {
		t.Fatalf("RemoveTrust by prefix: %q, %v", got, err)
	}
	// A broken file does not load, and a reload keeps the CAs in use.
	os.WriteFile(filepath.Join(dir, "broken.pem"), []byte("not a certificate"), 0o644)
	if _, err := bank.ReadTrustDir(dir); err == nil {
		t.Fatal("a broken trust file was read")
	}
	if err := ts.Reload(); err == nil || len(ts.CAs()) != 2 {
		t.Fatalf("reload of a broken directory: %v, %d CAs in use", err, len(ts.CAs()))
	}
}

func TestTrustWatch(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "bank-cas")
	ts, err := bank.NewTrustStore(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	reloads := make(chan error, 10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go ts.Watch(ctx, 10*time.Millisecond, func(err error) { reloads <- err })
	next := func() error {
		t.Helper()
		select {
		case err := <-reloads:
			return err
		case <-time.After(5 * time.Second):
			t.Fatal("no reload reported")
			return nil
		}
	}
	if _, err := bank.AddTrust(dir, []*x509.Certificate{testpki.NewCA(t, "Bank CA").Cert}, ""); err != nil {
		t.Fatal(err)
	}
	// AddTrust makes the directory, then renames the CA's file into it: a
	// poll in between reloads an empty directory, and the next one the CA.
	for len(ts.CAs()) != 1 {
		if err := next(); err != nil {
			t.Fatalf("after add: %v", err)
		}
	}
	tmp := filepath.Join(t.TempDir(), "broken.pem")
	os.WriteFile(tmp, []byte("not a certificate"), 0o644)
	os.Rename(tmp, filepath.Join(dir, "broken.pem"))
	// The add's reloads may still be on their way: the broken file's is
	// the one that fails.
	err = nil
	for err == nil {
		err = next()
	}
	if !strings.Contains(err.Error(), "broken.pem") || len(ts.CAs()) != 1 {
		t.Fatalf("after a broken file: %v, %d CAs", err, len(ts.CAs()))
	}
}
