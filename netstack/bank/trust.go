package bank

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/brokerd/brokerd/internal/certs"
	"github.com/brokerd/brokerd/internal/files"
	"github.com/brokerd/brokerd/internal/watch"
)

// originHeader scopes a trust file to one bank origin.
const originHeader = "# brokerd-origin: "

// TrustedCA is a CA certificate (or chain) an operator added for banks'
// servers, for every origin or for one.
type TrustedCA struct {
	Fingerprint string              `json:"fingerprint"` // SHA-256 of the first certificate, hex
	Subject     string              `json:"subject"`
	NotAfter    time.Time           `json:"not_after"`
	Origin      string              `json:"origin,omitempty"` // scheme://host:port; empty: every origin
	Certs       []*x509.Certificate `json:"-"`
}

// TrustStore is what bank servers are verified against: the system roots
// (which honour SSL_CERT_FILE and SSL_CERT_DIR) plus the CAs in a
// directory, each either global or scoped to one origin. Changes to the
// directory take effect for the next connection.
type TrustStore struct {
	dir  string
	log  *slog.Logger
	cur  atomic.Pointer[trustSet]
	seen atomic.Pointer[watch.Stamp] // of the directory as last read
}

type trustSet struct {
	system *x509.CertPool
	global *x509.CertPool
	scoped map[string]*x509.CertPool // origin → pool
	cas    []TrustedCA
}

// NewTrustStore loads the system roots and the CAs in dir.
func NewTrustStore(dir string, log *slog.Logger) (*TrustStore, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := &TrustStore{dir: dir, log: log}
	if err := t.Reload(); err != nil {
		return nil, err
	}
	return t, nil
}

// Reload reads the system roots and the directory again. On error the
// CAs in use stay.
func (t *TrustStore) Reload() error {
	st := watch.StampOf(t.dir)
	system, err := x509.SystemCertPool()
	if err != nil {
		system = x509.NewCertPool()
	}
	cas, err := ReadTrustDir(t.dir)
	t.seen.Store(&st)
	if err != nil {
		return err
	}
	set := &trustSet{system: system, global: x509.NewCertPool(), scoped: map[string]*x509.CertPool{}, cas: cas}
	for _, ca := range cas {
		pool := set.global
		if ca.Origin != "" {
			if set.scoped[ca.Origin] == nil {
				set.scoped[ca.Origin] = x509.NewCertPool()
			}
			pool = set.scoped[ca.Origin]
		}
		for _, c := range ca.Certs {
			pool.AddCert(c)
		}
	}
	t.cur.Store(set)
	t.log.Info("bank trust loaded", "dir", t.dir, "cas", len(cas))
	return nil
}

// Watch reloads the directory when it changes, until ctx ends, and tells
// onReload (when set) the outcome.
func (t *TrustStore) Watch(ctx context.Context, interval time.Duration, onReload func(error)) {
	watch.Poll(ctx, watch.Options{Paths: []string{t.dir}, Interval: interval, Seen: func() watch.Stamp { return *t.seen.Load() },
		Reload: t.Reload, OnReload: onReload, What: "bank trust directory", Log: t.log})
}

// CAs lists the operator's CAs in force.
func (t *TrustStore) CAs() []TrustedCA { return t.cur.Load().cas }

// Verify checks a bank's chain (leaf first) for host, connecting as origin,
// against the system roots, the global CAs and the CAs scoped to origin.
func (t *TrustStore) Verify(origin, host string, chain []*x509.Certificate) error {
	if len(chain) == 0 {
		return errors.New("the bank sent no certificate")
	}
	set := t.cur.Load()
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	var firstErr error
	for _, roots := range []*x509.CertPool{set.system, set.global, set.scoped[origin]} {
		if roots == nil {
			continue
		}
		_, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: host,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		if err == nil {
			return nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return &UntrustedError{Host: host, Err: firstErr}
}

// UntrustedError is a bank certificate that does not verify.
type UntrustedError struct {
	Host string
	Err  error
}

func (e *UntrustedError) Error() string {
	return fmt.Sprintf("untrusted bank certificate for %s: %v", e.Host, e.Err)
}
func (e *UntrustedError) Unwrap() error { return e.Err }

// ReadTrustDir reads the CA files of a trust directory; a missing
// directory holds none.
func ReadTrustDir(dir string) ([]TrustedCA, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("bank: trust directory: %w", err)
	}
	var out []TrustedCA
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".pem") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("bank: trust directory: %w", err)
		}
		ca, err := parseTrustFile(data)
		if err != nil {
			return nil, fmt.Errorf("bank: trust file %s: %w", e.Name(), err)
		}
		out = append(out, ca)
	}
	slices.SortFunc(out, func(a, b TrustedCA) int { return strings.Compare(a.Fingerprint, b.Fingerprint) })
	return out, nil
}

func parseTrustFile(data []byte) (TrustedCA, error) {
	var ca TrustedCA
	sc := bufio.NewScanner(bytes.NewReader(data))
	if sc.Scan() {
		if o, ok := strings.CutPrefix(sc.Text(), originHeader); ok {
			ca.Origin = strings.TrimSpace(o)
		}
	}
	cs, err := certs.ParsePEM(data)
	if err != nil {
		return ca, err
	}
	ca.Certs = cs
	ca.Fingerprint = Fingerprint(cs[0])
	ca.Subject = cs[0].Subject.String()
	ca.NotAfter = cs[0].NotAfter.UTC()
	return ca, nil
}

// Fingerprint is a certificate's SHA-256, lower-case hex.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// AddTrust writes a trust file for cs (the first certificate names it) to
// dir, scoped to origin when it is not empty. It returns the fingerprint.
func AddTrust(dir string, cs []*x509.Certificate, origin string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("bank: trust directory: %w", err)
	}
	fp := Fingerprint(cs[0])
	var b bytes.Buffer
	if origin != "" {
		b.WriteString(originHeader + origin + "\n")
	}
	fmt.Fprintf(&b, "# %s, until %s\n", cs[0].Subject, cs[0].NotAfter.UTC().Format(time.DateOnly))
	b.Write(certs.EncodePEM(cs...))
	if err := files.Replace(filepath.Join(dir, fp+".pem"), b.Bytes(), 0o644); err != nil {
		return "", fmt.Errorf("bank: write trust file: %w", err)
	}
	return fp, nil
}

// RemoveTrust deletes the trust file whose fingerprint starts with prefix
// (at least 8 hex digits, naming one file).
func RemoveTrust(dir, prefix string) (string, error) {
	prefix = strings.ToLower(strings.ReplaceAll(prefix, ":", ""))
	if len(prefix) < 8 {
		return "", fmt.Errorf("fingerprint %q: give at least 8 hex digits", prefix)
	}
	cas, err := ReadTrustDir(dir)
	if err != nil {
		return "", err
	}
	var match []string
	for _, ca := range cas {
		if strings.HasPrefix(ca.Fingerprint, prefix) {
			match = append(match, ca.Fingerprint)
		}
	}
	switch len(match) {
	case 0:
		return "", fmt.Errorf("no trusted CA with fingerprint %s", prefix)
	case 1:
		return match[0], os.Remove(filepath.Join(dir, match[0]+".pem"))
	}
	return "", fmt.Errorf("fingerprint %s names %d CAs; give more digits", prefix, len(match))
}
