package pki

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/brokerd/brokerd/internal/certs"
	"github.com/brokerd/brokerd/internal/files"
	"github.com/brokerd/brokerd/keys"
	"github.com/brokerd/brokerd/store"
	"github.com/brokerd/brokerd/tpm"
)

// CAKeyID is the TPM key of brokerd's own CA.
const CAKeyID = keys.ReservedPrefix + "ca"

// ErrNoCA is returned where brokerd's own CA is needed but the appliance
// uses a PKI of its own (init --tls-cert ...).
var ErrNoCA = errors.New("this appliance has no CA of its own (it was initialised with --tls-cert, --tls-key and --client-ca): issue client certificates with your PKI")

// caValidity is the validity of brokerd's CA certificate.
const caValidity = 20 * 365 * 24 * time.Hour

// metaCRLNumber keeps the number of the last CRL signed (it must grow).
const metaCRLNumber = "pki.crl_number"

// Config is what the Service needs of the configuration.
type Config struct {
	// ServerNames are the DNS names and IP addresses of the server
	// certificate, valid for ServerValidity and renewed RenewBefore its end.
	ServerNames    []string
	ServerValidity time.Duration
	RenewBefore    time.Duration
	// ClientValidity is the default validity of client certificates.
	ClientValidity time.Duration
	// CRLValidity is the distance to the CRL's next update; it is signed
	// again halfway.
	CRLValidity time.Duration
	// TLSCert is the server certificate file; the CRL (crl.pem) is written
	// next to it.
	TLSCert string
	// TLSKey is the server key's id in the key registry.
	TLSKey string
	// RoleOID is the extension that carries clients' role URLs.
	RoleOID asn1.ObjectIdentifier
}

// ServerKeyID is the id of the server's TLS key in the key registry.
const ServerKeyID = keys.ReservedPrefix + "tls-server"

// DefaultConfig is the CA's default configuration; ServerNames and TLSCert
// depend on the appliance.
func DefaultConfig() Config {
	const day = 24 * time.Hour
	return Config{ServerValidity: 365 * day, RenewBefore: 30 * day, ClientValidity: 365 * day, CRLValidity: 7 * day, TLSKey: ServerKeyID}
}

// Service is brokerd's CA at work on one state: it makes the CA, issues
// and renews the server certificate, issues client certificates and signs
// the CRL. Safe for concurrent use.
type Service struct {
	cfg  Config
	keys *keys.Manager
	reg  *Registry
	st   *store.Store
	// crlMu serialises signing the CRL (its number must grow).
	crlMu sync.Mutex
}

// NewService returns the CA service over a key registry and a state.
func NewService(cfg Config, km *keys.Manager, st *store.Store) *Service {
	return &Service{cfg: cfg, keys: km, reg: NewRegistry(st), st: st}
}

// Registry is the registry of client certificates.
func (s *Service) Registry() *Registry { return s.reg }

// CRLPath is where the CA's CRL is written: crl.pem next to the server
// certificate.
func (s *Service) CRLPath() string { return filepath.Join(filepath.Dir(s.cfg.TLSCert), "crl.pem") }

// CACert returns brokerd's CA certificate; ErrNoCA without one. It needs
// no TPM: revocations are applied from it and the registry alone.
func (s *Service) CACert() (*x509.Certificate, error) {
	chain, err := s.keys.Chain(CAKeyID)
	if errors.Is(err, keys.ErrUnknownKey) {
		return nil, ErrNoCA
	}
	if err != nil {
		return nil, fmt.Errorf("pki: CA certificate: %w", err)
	}
	if len(chain) == 0 {
		return nil, fmt.Errorf("pki: the CA key %s has no certificate", CAKeyID)
	}
	return chain[0], nil
}

// Authority returns brokerd's CA, its key in the TPM; ErrNoCA without one.
func (s *Service) Authority(ctx context.Context) (*Authority, error) {
	cert, err := s.CACert()
	if err != nil {
		return nil, err
	}
	signer, err := s.keys.Signer(ctx, CAKeyID)
	if err != nil {
		return nil, fmt.Errorf("pki: CA key: %w", err)
	}
	// The CA signs certificates and CRLs: housekeeping, behind clients.
	return NewAuthority(cert, tpm.SignerWithClass(signer, tpm.ClassHousekeeping), s.cfg.RoleOID)
}

// CreateCA makes brokerd's CA: a P-256 key in the TPM and its root
// certificate.
func (s *Service) CreateCA(ctx context.Context, now time.Time) (*Authority, error) {
	if _, _, err := s.keys.Create(ctx, CAKeyID, tpm.P256, keys.CreateOptions{Internal: true}); err != nil {
		return nil, fmt.Errorf("pki: create the CA key: %w", err)
	}
	signer, err := s.keys.Signer(ctx, CAKeyID)
	if err != nil {
		return nil, fmt.Errorf("pki: CA key: %w", err)
	}
	host, _ := os.Hostname()
	subject := pkix.Name{CommonName: "brokerd CA " + host, Organization: []string{"brokerd"}}
	root, err := NewRoot(signer, subject, caValidity, now)
	if err != nil {
		return nil, err
	}
	if _, err := s.keys.AttachCert(CAKeyID, []*x509.Certificate{root}, nil); err != nil {
		return nil, fmt.Errorf("pki: CA certificate: %w", err)
	}
	return NewAuthority(root, signer, s.cfg.RoleOID)
}

// IssueServerCert certifies the TPM's server key for the configured names
// and writes the certificate where the listener reads it.
func (s *Service) IssueServerCert(ctx context.Context, ca *Authority, now time.Time) (*x509.Certificate, error) {
	signer, err := s.keys.Signer(ctx, s.cfg.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("pki: server key: %w", err)
	}
	cert, err := ca.IssueServer(signer.Public(), s.cfg.ServerNames, s.cfg.ServerValidity, now)
	if err != nil {
		return nil, err
	}
	if _, err := s.keys.AttachCert(s.cfg.TLSKey, []*x509.Certificate{cert, ca.Cert}, nil); err != nil {
		return nil, fmt.Errorf("pki: server certificate: %w", err)
	}
	if err := files.Replace(s.cfg.TLSCert, certs.EncodePEM(cert), 0o644); err != nil {
		return nil, fmt.Errorf("pki: write the server certificate: %w", err)
	}
	return cert, nil
}

// WriteCRL signs the CA's CRL again and writes it to CRLPath.
func (s *Service) WriteCRL(ca *Authority, now time.Time) error {
	s.crlMu.Lock()
	defer s.crlMu.Unlock()
	revoked, err := s.reg.RevokedSerials()
	if err != nil {
		return err
	}
	n := int64(1)
	if v, err := s.st.Meta(metaCRLNumber); err == nil && v != nil {
		if p, err := strconv.ParseInt(string(v), 10, 64); err == nil {
			n = p + 1
		}
	}
	data, err := ca.CRL(revoked, n, now, now.Add(s.cfg.CRLValidity))
	if err != nil {
		return err
	}
	if err := s.st.SetMeta(metaCRLNumber, []byte(strconv.FormatInt(n, 10))); err != nil {
		return err
	}
	if err := files.Replace(s.CRLPath(), data, 0o644); err != nil {
		return fmt.Errorf("pki: write the CRL: %w", err)
	}
	return nil
}

// ApplyOwn puts brokerd's CA's revocations in force in rev, from the CA
// certificate and the registry alone (no TPM); without a CA of its own it
// does nothing.
func (s *Service) ApplyOwn(rev *Revocations) error {
	ca, err := s.CACert()
	if errors.Is(err, ErrNoCA) {
		return nil
	}
	if err != nil {
		return err
	}
	// Under crlMu: two of these (an admin command's, a reload's) must not
	// store out of order.
	s.crlMu.Lock()
	defer s.crlMu.Unlock()
	serials, err := s.reg.RevokedSerials()
	if err != nil {
		return err
	}
	rev.SetOwn(ca, serials)
	return nil
}

// ApplyOwnFrom puts brokerd's CA's revocations in force in rev from a
// state file alone, as ApplyOwn does from a running service: the CA
// certificate recorded with its key, and the registry. Without a CA of its
// own it does nothing.
func ApplyOwnFrom(st *store.Store, rev *Revocations) error {
	chain, err := keys.ReadChain(st, CAKeyID)
	if errors.Is(err, keys.ErrUnknownKey) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(chain) == 0 {
		return fmt.Errorf("pki: the CA key %s has no certificate", CAKeyID)
	}
	serials, err := NewRegistry(st).RevokedSerials()
	if err != nil {
		return err
	}
	rev.SetOwn(chain[0], serials)
	return nil
}

// TLSServer is what renewal needs of the API listener.
type TLSServer interface {
	Reload() error
	Leaf() *x509.Certificate
}

// Recorder audits an administrative event; err is its failure, if any.
type Recorder func(op, keyID, detail string, err error)

// Maintain renews the server certificate RenewBefore its end and signs the
// CRL again halfway through its validity, while ctx lasts; a failure is
// retried a minute later. changed says the server certificate was
// replaced (renewal looks at the new one).
func (s *Service) Maintain(ctx context.Context, ca *Authority, srv TLSServer, record Recorder, changed <-chan struct{}, log *slog.Logger) {
	for {
		wait := 12 * time.Hour
		if d, err := s.RenewServerCert(ctx, ca, srv, record); err != nil {
			log.Error("server certificate renewal", "err", err)
			wait = time.Minute
		} else {
			wait = min(wait, d)
		}
		if d, err := s.RefreshCRL(ca); err != nil {
			log.Error("CRL", "err", err)
			wait = time.Minute
		} else {
			wait = min(wait, d)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-changed:
			t.Stop()
		case <-t.C:
		}
	}
}

// RenewServerCert renews a server certificate of brokerd's CA that is
// due and puts it in force; it returns the time until the next one is
// due. A certificate from another CA is left alone.
func (s *Service) RenewServerCert(ctx context.Context, ca *Authority, srv TLSServer, record Recorder) (time.Duration, error) {
	const never = 365 * 24 * time.Hour
	chain, err := certs.ReadFile(s.cfg.TLSCert)
	if err != nil {
		return 0, err
	}
	cur := chain[0]
	if cur.CheckSignatureFrom(ca.Cert) != nil {
		return never, nil
	}
	if d := time.Until(cur.NotAfter.Add(-s.cfg.RenewBefore)); d > 0 {
		if !srv.Leaf().Equal(cur) {
			// A renewal written but not put in force: try again.
			if err := srv.Reload(); err != nil {
				return 0, err
			}
		}
		return d, nil
	}
	next, err := s.IssueServerCert(ctx, ca, time.Now())
	if err != nil {
		record("admin.tls.renew", s.cfg.TLSKey, "renewing server certificate serial "+SerialHex(cur), err)
		return 0, err
	}
	err = srv.Reload()
	record("admin.tls.renew", s.cfg.TLSKey, fmt.Sprintf("server certificate serial %s for %v until %s, replacing serial %s",
		SerialHex(next), s.cfg.ServerNames, next.NotAfter.UTC().Format(time.RFC3339), SerialHex(cur)), err)
	if err != nil {
		return 0, err
	}
	return time.Until(next.NotAfter.Add(-s.cfg.RenewBefore)), nil
}

// RefreshCRL signs the CRL again when half its validity has passed (or it
// is missing), and returns the time until that is next due.
func (s *Service) RefreshCRL(ca *Authority) (time.Duration, error) {
	half := s.cfg.CRLValidity / 2
	if data, err := os.ReadFile(s.CRLPath()); err == nil {
		if block, _ := pem.Decode(data); block != nil {
			if crl, err := x509.ParseRevocationList(block.Bytes); err == nil {
				if d := time.Until(crl.ThisUpdate.Add(half)); d > 0 {
					return d, nil
				}
			}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("pki: read the CRL: %w", err)
	}
	if err := s.WriteCRL(ca, time.Now()); err != nil {
		return 0, err
	}
	return half, nil
}
