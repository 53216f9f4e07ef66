package pki_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/brokerd/brokerd/internal/certs"
	"github.com/brokerd/brokerd/pki"
	"github.com/brokerd/brokerd/store"
)

// fakeTLS stands for the API server: Reload serves the certificate file
// (unless broken), Leaf is the one served. Maintain's goroutine and the
// test share it.
type fakeTLS struct {
	file string

	mu      sync.Mutex
	leaf    *x509.Certificate
	reloads int
	broken  bool
}

func (f *fakeTLS) Reload() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reloads++
	if f.broken {
		return errors.New("the listener cannot load it")
	}
	chain, err := certs.ReadFile(f.file)
	if err != nil {
		return err
	}
	f.leaf = chain[0]
	return nil
}

func (f *fakeTLS) Leaf() *x509.Certificate {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.leaf
}

func (f *fakeTLS) state() (reloads int, leaf *x509.Certificate) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reloads, f.leaf
}

func (f *fakeTLS) setBroken(b bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.broken = b
}

// errorCount counts the errors logged.
type errorCount struct {
	mu sync.Mutex
	n  int
}

func (e *errorCount) Enabled(context.Context, slog.Level) bool { return true }
func (e *errorCount) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelError {
		e.mu.Lock()
		e.n++
		e.mu.Unlock()
	}
	return nil
}
func (e *errorCount) WithAttrs([]slog.Attr) slog.Handler { return e }
func (e *errorCount) WithGroup(string) slog.Handler      { return e }
func (e *errorCount) count() int                         { e.mu.Lock(); defer e.mu.Unlock(); return e.n }

// crlNumber is the number of the CRL at path.
func crlNumber(t *testing.T, path string) int64 {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s: no PEM", path)
	}
	crl, err := x509.ParseRevocationList(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return crl.Number.Int64()
}

// maintained is pki.Service.Maintain running on fake time, with a CA whose
// key is in memory: the schedule needs no TPM as long as no renewal is due.
type maintained struct {
	svc    *pki.Service
	ca     *pki.Authority
	srv    *fakeTLS
	errs   *errorCount
	cert   string // the server certificate file
	server *ecdsa.PrivateKey
	wake   chan struct{}
	stop   func()
}

func startMaintain(t *testing.T, cfg pki.Config) *maintained {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, store.FileName), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	root, err := pki.NewRoot(caKey, pkix.Name{CommonName: "brokerd CA test"}, 10*365*24*time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	m := &maintained{cert: filepath.Join(dir, "server.crt"), errs: &errorCount{}, wake: make(chan struct{}, 1)}
	m.ca, _ = pki.NewAuthority(root, caKey, nil)
	m.server, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cfg.TLSCert, cfg.TLSKey = m.cert, "brokerd:tls-server"
	m.svc = pki.NewService(cfg, nil, st) // no key registry: nothing may need the TPM
	m.srv = &fakeTLS{file: m.cert}
	m.writeCert(t)
	if err := m.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.svc.Maintain(ctx, m.ca, m.srv, func(op, _, detail string, err error) {
			t.Errorf("nothing was due, yet recorded %s %s %v", op, detail, err)
		}, m.wake, slog.New(m.errs))
	}()
	m.stop = func() { cancel(); <-done }
	return m
}

// writeCert issues a server certificate now, as tls renew does, and
// returns it.
func (m *maintained) writeCert(t *testing.T) *x509.Certificate {
	t.Helper()
	cert, err := m.ca.IssueServer(m.server.Public(), []string{"localhost"}, 30*24*time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.cert, certs.EncodePEM(cert), 0o644); err != nil {
		t.Fatal(err)
	}
	return cert
}

// TestMaintainSchedule: Maintain signs the CRL again halfway through its
// validity, wakes at least every 12 hours, puts a certificate written but
// not served in force when told the file changed, and retries a failure a
// minute later. On fake time (synctest), each step is exact.
func TestMaintainSchedule(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		m := startMaintain(t, pki.Config{ServerValidity: 30 * 24 * time.Hour, RenewBefore: 10 * 24 * time.Hour, CRLValidity: 48 * time.Hour})
		defer m.stop()
		crl := m.svc.CRLPath()
		synctest.Wait()
		if n := crlNumber(t, crl); n != 1 {
			t.Fatalf("at start: CRL number %d, want 1 (none was there)", n)
		}
		time.Sleep(12 * time.Hour) // fake time: a pass, CRL not due
		synctest.Wait()
		if n := crlNumber(t, crl); n != 1 {
			t.Fatalf("after 12 h: CRL number %d, want still 1", n)
		}
		time.Sleep(12 * time.Hour) // fake time: half the CRL's validity
		synctest.Wait()
		if n := crlNumber(t, crl); n != 2 {
			t.Fatalf("after 24 h: CRL number %d, want 2", n)
		}
		// Written but not served: told so, Maintain serves it at once.
		renewed := m.writeCert(t)
		m.wake <- struct{}{}
		synctest.Wait()
		if n, leaf := m.srv.state(); n != 2 || !leaf.Equal(renewed) {
			t.Fatalf("after the change: %d reloads, serving the renewed certificate: %v", n, leaf.Equal(renewed))
		}
		m.testRetry(t)
	})
}

// testRetry: a reload that fails is retried a minute later, and only then.
func (m *maintained) testRetry(t *testing.T) {
	t.Helper()
	m.srv.setBroken(true)
	renewed := m.writeCert(t)
	m.wake <- struct{}{}
	synctest.Wait()
	if n, _ := m.srv.state(); n != 3 || m.errs.count() != 1 {
		t.Fatalf("a failing reload: %d reloads, %d errors logged; want 3 and 1", n, m.errs.count())
	}
	time.Sleep(time.Minute - time.Second) // fake time: not yet
	synctest.Wait()
	if n, _ := m.srv.state(); n != 3 {
		t.Fatalf("retried before a minute: %d reloads", n)
	}
	m.srv.setBroken(false)
	time.Sleep(time.Second) // fake time: the minute is up
	synctest.Wait()
	if n, leaf := m.srv.state(); n != 4 || !leaf.Equal(renewed) {
		t.Fatalf("the retry: %d reloads, serving the renewed certificate: %v", n, leaf.Equal(renewed))
	}
}
