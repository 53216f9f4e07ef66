package pki_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/brokerd/brokerd/pki"
)

// TestRevokeTwiceAndExpired: revoking a revoked client, by name or serial,
// says since when; a client whose last certificate expired is told so.
func TestRevokeTwiceAndExpired(t *testing.T) {
	t.Parallel()
	ca := newAuthority(t)
	reg := pki.NewRegistry(openStore(t))
	add := func(name string, at time.Time) pki.Record {
		t.Helper()
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		cert, err := ca.IssueClientKey(key.Public(), pki.Client{Name: name}, 24*time.Hour, at)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := reg.Add(cert, pki.Client{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		return rec
	}
	rec := add("agg", now)
	if _, err := reg.Revoke("agg", now); err != nil {
		t.Fatal(err)
	}
	want := `client "agg" (serial ` + rec.Serial + `) is already revoked (it was revoked on 2026-11-23T12:00:00Z)`
	for _, which := range []string{"agg", rec.Serial} {
		if _, err := reg.Revoke(which, now.Add(time.Hour)); !errors.Is(err, pki.ErrAlreadyRevoked) || !strings.HasSuffix(err.Error(), want) {
			t.Errorf("revoke %s again: %v", which, err)
		}
	}
	old := add("gone", now.Add(-72*time.Hour))
	if _, err := reg.Revoke("gone", now); err == nil || !strings.Contains(err.Error(), "no valid certificate: the last one (serial "+old.Serial+") expired on") {
		t.Errorf("revoke an expired one by name: %v", err)
	}
	if r, err := reg.Revoke(old.Serial, now); err != nil || r.Revoked == nil {
		t.Errorf("revoke an expired one by serial: %v", err)
	}
}
