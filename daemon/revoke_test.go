package daemon_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"path/filepath"
	"strings"
	"testing"

	"github.com/brokerd/brokerd/config"
	"github.com/brokerd/brokerd/daemon"
	"github.com/brokerd/brokerd/internal/swtpmtest"
	"github.com/brokerd/brokerd/pki"
)

// TestRevokeWithoutTheCAKey: a revocation needs the CA certificate and the
// registry only: with the CA's key unusable it is stored and in force, and
// only the CRL file is reported as not signed.
func TestRevokeWithoutTheCAKey(t *testing.T) {
	t.Parallel()
	sw := swtpmtest.Start(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "etc", "brokerd.toml")
	cfg := config.Default()
	cfg.TPM.Address, cfg.StateDir = sw.Address(), filepath.Join(dir, "state")
	cfg.Admin.Socket, cfg.PKI.ServerNames = filepath.Join(dir, "admin.sock"), []string{"localhost"}
	ctx := context.Background()
	if _, err := daemon.Init(ctx, path, cfg, nil, nil); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := daemon.OpenState(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if _, _, err := s.IssueClient(ctx, "tester", pki.ClientRequest{Client: pki.Client{Name: "agg"}, Key: key.Public()}); err != nil {
		t.Fatal(err)
	}
	sw.Kill() // the CA's key can no longer sign
	rec, err := s.RevokeClient(ctx, "tester", "agg")
	if err == nil || !strings.Contains(err.Error(), "(in force), but the CRL file") {
		t.Fatalf("revoke without the CA key: %v", err)
	}
	if rec.Revoked == nil {
		t.Fatalf("record %+v", rec)
	}
	recs, _ := s.PKI.Registry().List()
	if len(recs) != 1 || recs[0].Revoked == nil {
		t.Fatalf("the revocation was not stored: %+v", recs)
	}
	rev, _ := pki.NewRevocations(nil, nil)
	if err := s.PKI.ApplyOwn(rev); err != nil {
		t.Fatalf("applying revocations without the TPM: %v", err)
	}
}
