package daemon_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/brokerd/brokerd/config"
	"github.com/brokerd/brokerd/daemon"
	"github.com/brokerd/brokerd/pki"
)

// fakeTLS stands for the API server in renewal tests: Reload counts,
// Leaf is what it was given.
type fakeTLS struct {
	reloads int
	leaf    *x509.Certificate
}

func (f *fakeTLS) Reload() error           { f.reloads++; return nil }
func (f *fakeTLS) Leaf() *x509.Certificate { return f.leaf }

// TestRenewalWithoutTheTPM: a renewal that cannot sign fails, on record,
// and the next one works once the TPM is back; a renewal written but not
// served is put in force by the next pass.
func TestRenewalWithoutTheTPM(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false)
	f.cfg.PKI.ServerValidity = config.Duration{Duration: 65 * time.Second}
	f.cfg.PKI.RenewBefore = config.Duration{Duration: 60 * time.Second}
	s := f.state()
	ctx := context.Background()
	ca, err := s.PKI.Authority(ctx)
	if err != nil {
		t.Fatal(err)
	}
	due, err := s.PKI.IssueServerCert(ctx, ca, time.Now().Add(-time.Hour)) // expired: due
	if err != nil {
		t.Fatal(err)
	}
	var recorded []string
	record := func(op, _, detail string, err error) {
		recorded = append(recorded, fmt.Sprint(op, " ", detail, " ", err))
	}
	srv := &fakeTLS{leaf: due}
	f.sw.Stop()
	if _, err := s.PKI.RenewServerCert(ctx, ca, srv, record); err == nil {
		t.Fatal("renewed without a TPM")
	}
	if len(recorded) != 1 || !strings.HasPrefix(recorded[0], "admin.tls.renew renewing server certificate serial "+pki.SerialHex(due)) || strings.HasSuffix(recorded[0], "<nil>") {
		t.Fatalf("records %q", recorded)
	}
	f.sw.Restart()
	wait, err := s.PKI.RenewServerCert(ctx, ca, srv, record)
	if err != nil {
		t.Fatal(err)
	}
	now := readCert(t, f.cfg.API.TLSCert)
	if srv.reloads != 1 || now.Equal(due) || wait > 5*time.Second || !strings.HasSuffix(recorded[1], "<nil>") {
		t.Fatalf("after the TPM came back: reloads %d, wait %v, records %q", srv.reloads, wait, recorded)
	}
	// Written but not served (a failed reload): the next pass puts it in force.
	if _, err := s.PKI.RenewServerCert(ctx, ca, srv, record); err != nil || srv.reloads != 2 {
		t.Fatalf("not served yet: %v, reloads %d", err, srv.reloads)
	}
}

// TestServerCertificateRenewsItself: pki.renew_before its end, the daemon
// issues a new server certificate and serves it, without a restart, on
// record; a certificate issued by hand (tls renew) is served once
// ReloadTLS is called.
func TestServerCertificateRenewsItself(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false)
	s := f.state()
	ctx := context.Background()
	ca, err := s.PKI.Authority(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Issued 340 days ago, valid a year: due, renew_before being 30 days.
	old, err := s.PKI.IssueServerCert(ctx, ca, time.Now().Add(-340*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	r := f.start(daemon.Deps{})
	r.logs.wait(t, 2, "tls material loaded") // at start, and renewed
	renewed := servedCert(t, r)
	if renewed.Equal(old) || time.Until(renewed.NotAfter) < 300*24*time.Hour {
		t.Fatalf("serving serial %s until %s; the due one was serial %s", pki.SerialHex(renewed), renewed.NotAfter, pki.SerialHex(old))
	}
	// By hand, as tls renew does inside the daemon.
	if ca, err = r.State().PKI.Authority(ctx); err != nil {
		t.Fatal(err)
	}
	byHand, err := r.State().PKI.IssueServerCert(ctx, ca, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := r.ReloadTLS(); err != nil {
		t.Fatal(err)
	}
	if served := servedCert(t, r); !served.Equal(byHand) {
		t.Fatalf("after ReloadTLS: serving serial %s, want %s", pki.SerialHex(served), pki.SerialHex(byHand))
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, rec := range auditRecords(t, f.cfg.StatePath()) {
		if rec.Op == "admin.tls.renew" && rec.Client == "daemon" && rec.Status == 200 {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d renewals by the daemon on record, want 1", n)
	}
}
