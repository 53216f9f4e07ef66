package pki

import (
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"strings"
	"time"
)

// ClientRequest asks for one client certificate: for the key of CSR (its
// signature checked by the caller), or for Key.
type ClientRequest struct {
	Client Client
	// Validity of the certificate; 0 means Config.ClientValidity.
	Validity time.Duration
	CSR      *x509.CertificateRequest
	Key      crypto.PublicKey
	// Before, when set, runs once the name and key are checked, just
	// before the certificate is issued; its error stops everything.
	Before func() error
}

// IssueClient checks the name and the key against the registry, runs
// req.Before, issues the certificate with brokerd's CA and records it in
// the registry. The caller audits the issue.
func (s *Service) IssueClient(ctx context.Context, req ClientRequest) (*x509.Certificate, Record, error) {
	if err := CheckName(req.Client.Name); err != nil {
		return nil, Record{}, err
	}
	validity := req.Validity
	if validity == 0 {
		validity = s.cfg.ClientValidity
	}
	spki, err := req.spki()
	if err != nil {
		return nil, Record{}, err
	}
	ca, err := s.Authority(ctx)
	if err != nil {
		return nil, Record{}, err
	}
	now := time.Now()
	if err := s.reg.CheckNew(req.Client.Name, KeySHA256(spki), now); err != nil {
		return nil, Record{}, err
	}
	if req.Before != nil {
		if err := req.Before(); err != nil {
			return nil, Record{}, err
		}
	}
	var cert *x509.Certificate
	if req.CSR != nil {
		cert, err = ca.IssueClient(req.CSR, req.Client, validity, now)
	} else {
		cert, err = ca.IssueClientKey(req.Key, req.Client, validity, now)
	}
	if err != nil {
		return nil, Record{}, err
	}
	rec, err := s.reg.Add(cert, req.Client)
	if err != nil {
		return nil, Record{}, err
	}
	return cert, rec, nil
}

func (req ClientRequest) spki() ([]byte, error) {
	if req.CSR != nil {
		return req.CSR.RawSubjectPublicKeyInfo, nil
	}
	spki, err := x509.MarshalPKIXPublicKey(req.Key)
	if err != nil {
		return nil, fmt.Errorf("pki: client key: %w", err)
	}
	return spki, nil
}

// Summary describes the record for the audit log.
func (r Record) Summary() string {
	s := fmt.Sprintf("client %q serial %s sha256 %s until %s", r.Name, r.Serial, r.Fingerprint, r.NotAfter.UTC().Format(time.RFC3339))
	if len(r.Roles) > 0 {
		s += " roles " + strings.Join(r.Roles, " ")
	}
	return s
}
