package main

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/brokerd/brokerd/config"
	"github.com/brokerd/brokerd/internal/certs"
	"github.com/brokerd/brokerd/internal/files"
	"github.com/brokerd/brokerd/keys"
	"github.com/brokerd/brokerd/pki"
	"github.com/brokerd/brokerd/policy"
	"github.com/brokerd/brokerd/tpm"
)

// caKeyID is the TPM key of brokerd's own CA.
const caKeyID = keys.ReservedPrefix + "ca"

// errNoCA is returned where brokerd's own CA is needed but the appliance
// uses a PKI of its own (init --tls-cert ...).
var errNoCA = errors.New("this appliance has no CA of its own (it was initialised with --tls-cert, --tls-key and --client-ca): issue client certificates with your PKI")

// Validity of brokerd's CA certificate.
const caValidity = 20 * 365 * 24 * time.Hour

// tlsDir is where the server certificate, the CA certificate and the CRL
// are: next to the server certificate.
func tlsDir(cfg *config.Config) string { return filepath.Dir(cfg.API.TLSCert) }

func crlPath(cfg *config.Config) string { return filepath.Join(tlsDir(cfg), "crl.pem") }

// roleOID is the configured role extension (validated with the config).
func roleOID(cfg *config.Config) asn1.ObjectIdentifier {
	o, _ := policy.ParseRoleOID(cfg.Policy.RoleOID)
	return o
}

// authority is brokerd's CA, its key in the TPM; errNoCA without one.
func (s *state) authority(ctx context.Context) (*pki.Authority, error) {
	chain, err := s.keys.Chain(caKeyID)
	if errors.Is(err, keys.ErrUnknownKey) {
		return nil, errNoCA
	}
	if err != nil {
		return nil, err
	}
	if len(chain) == 0 {
		return nil, fmt.Errorf("the CA key %s has no certificate", caKeyID)
	}
	signer, err := s.keys.Signer(ctx, caKeyID)
	if err != nil {
		return nil, err
	}
	return pki.NewAuthority(chain[0], signer, roleOID(s.cfg))
}

// createCA makes brokerd's CA: a P-256 key in the TPM and its root
// certificate.
func createCA(ctx context.Context, s *state, now time.Time) (*pki.Authority, error) {
	if _, _, err := s.keys.Create(ctx, caKeyID, tpm.P256, keys.CreateOptions{Internal: true}); err != nil {
		return nil, err
	}
	signer, err := s.keys.Signer(ctx, caKeyID)
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	subject := pkix.Name{CommonName: "brokerd CA " + host, Organization: []string{"brokerd"}}
	root, err := pki.NewRoot(signer, subject, caValidity, now)
	if err != nil {
		return nil, err
	}
	if _, err := s.keys.AttachCert(caKeyID, []*x509.Certificate{root}, nil); err != nil {
		return nil, err
	}
	return pki.NewAuthority(root, signer, roleOID(s.cfg))
}

// issueServerCert certifies the TPM's server key for the configured names
// and writes the certificate where the listener reads it.
func issueServerCert(ctx context.Context, s *state, ca *pki.Authority, now time.Time) (*x509.Certificate, error) {
	signer, err := s.keys.Signer(ctx, s.cfg.API.TLSKey)
	if err != nil {
		return nil, err
	}
	cert, err := ca.IssueServer(signer.Public(), s.cfg.PKI.ServerNames, s.cfg.PKI.ServerValidity.Duration, now)
	if err != nil {
		return nil, err
	}
	if _, err := s.keys.AttachCert(s.cfg.API.TLSKey, []*x509.Certificate{cert, ca.Cert}, nil); err != nil {
		return nil, err
	}
	if err := files.Replace(s.cfg.API.TLSCert, certs.EncodePEM(cert), 0o644); err != nil {
		return nil, err
	}
	return cert, nil
}

// writeCRL signs the CA's CRL again and writes it to tls/crl.pem.
func writeCRL(s *state, ca *pki.Authority, now time.Time) error {
	s.crlMu.Lock()
	defer s.crlMu.Unlock()
	revoked, err := pki.NewRegistry(s.st).RevokedSerials()
	if err != nil {
		return err
	}
	n := int64(1)
	if v, err := s.st.Meta("pki.crl_number"); err == nil && v != nil {
		if p, err := strconv.ParseInt(string(v), 10, 64); err == nil {
			n = p + 1
		}
	}
	data, err := ca.CRL(revoked, n, now, now.Add(s.cfg.PKI.CRLValidity.Duration))
	if err != nil {
		return err
	}
	if err := s.st.SetMeta("pki.crl_number", []byte(strconv.FormatInt(n, 10))); err != nil {
		return err
	}
	return files.Replace(crlPath(s.cfg), data, 0o644)
}
