package daemon

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/brokerd/brokerd/admin"
	"github.com/brokerd/brokerd/audit"
	"github.com/brokerd/brokerd/internal/certs"
	"github.com/brokerd/brokerd/keys"
	"github.com/brokerd/brokerd/pki"
	"github.com/brokerd/brokerd/tpm"
)

// The changes the command line makes to the state, each audited as its
// actor's and, made on the state the running daemon lends (Daemon.State),
// put in force at once.

// IssueClient issues a client certificate with brokerd's CA and audits it.
func (s *State) IssueClient(ctx context.Context, actor string, req pki.ClientRequest) (*x509.Certificate, pki.Record, error) {
	cert, rec, err := s.PKI.IssueClient(ctx, req)
	if err != nil {
		return nil, pki.Record{}, err
	}
	if err := s.Record(ctx, actor, "admin.client.issue", "", rec.Summary()); err != nil {
		return nil, pki.Record{}, err
	}
	return cert, rec, nil
}

// notWritten says that a certificate was issued but not handed over, and
// where to find it.
func notWritten(rec pki.Record, err error) error {
	return fmt.Errorf("certificate %s issued and recorded, but not written (%w): brokerd client list --json has it (field certificate)", rec.Serial, err)
}

// IssueClientCert certifies req.CSR and writes the certificate (PEM) to
// out through fsys (the caller's files). Nothing is issued unless out can
// be written: no certificate nobody receives.
func (s *State) IssueClientCert(ctx context.Context, actor string, req pki.ClientRequest, out string, fsys admin.FS) (pki.Record, error) {
	req.Before = func() error {
		if err := fsys.Writable(out); err != nil {
			return fmt.Errorf("%w (no certificate issued)", err)
		}
		return nil
	}
	cert, rec, err := s.IssueClient(ctx, actor, req)
	if err != nil {
		return pki.Record{}, err
	}
	if err := fsys.WriteFile(out, certs.EncodePEM(cert), 0o644); err != nil {
		return pki.Record{}, notWritten(rec, err)
	}
	return rec, nil
}

// ClientFiles are the files IssueClientFiles writes.
type ClientFiles struct {
	Key, Cert, CA string
}

// IssueClientFiles makes a client key here, certifies it and writes
// DIR/NAME.key (mode 0600), DIR/NAME.crt and DIR/ca.crt through fsys (the
// caller's files).
func (s *State) IssueClientFiles(ctx context.Context, actor string, req pki.ClientRequest, dir string, fsys admin.FS) (ClientFiles, pki.Record, error) {
	ca, err := s.PKI.CACert()
	if err != nil {
		return ClientFiles{}, pki.Record{}, err
	}
	key, keyPEM, err := pki.NewClientKey()
	if err != nil {
		return ClientFiles{}, pki.Record{}, err
	}
	defer clear(keyPEM)
	base := filepath.Join(dir, pki.ClientFileName(req.Client.Name))
	f := ClientFiles{Key: base + ".key", Cert: base + ".crt", CA: filepath.Join(dir, "ca.crt")}
	// The key file is written first, and only where none exists: nothing
	// is issued for a key that could not be handed over.
	req.Key, req.Before = key.Public(), func() error {
		if err := fsys.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		return fsys.CreateFile(f.Key, keyPEM, 0o600)
	}
	cert, rec, err := s.IssueClient(ctx, actor, req)
	if err != nil {
		return ClientFiles{}, pki.Record{}, err
	}
	for _, w := range []struct {
		path string
		data []byte
	}{{f.Cert, certs.EncodePEM(cert)}, {f.CA, certs.EncodePEM(ca)}} {
		if err := fsys.WriteFile(w.path, w.data, 0o644); err != nil {
			return ClientFiles{}, pki.Record{}, notWritten(rec, err)
		}
	}
	return f, rec, nil
}

// RevokeClient revokes the client certificate which names (a client name
// or a serial, as pki.Registry.Revoke takes it), signs the CRL again and
// audits it. The revocation is in force once stored: an error after that
// says so.
//
// Revocation needs only the CA certificate and the registry: whatever
// happened to the CA key (a TPM that does not answer), the revocation is
// stored and in force; only the CRL file then waits.
func (s *State) RevokeClient(ctx context.Context, actor, which string) (pki.Record, error) {
	if _, err := s.PKI.CACert(); err != nil {
		return pki.Record{}, err
	}
	rec, err := s.PKI.Registry().Revoke(which, time.Now())
	if err != nil {
		return pki.Record{}, err
	}
	if s.daemon != nil {
		s.daemon.ApplyRevocations()
	}
	ca, crlErr := s.PKI.Authority(ctx)
	if crlErr == nil {
		crlErr = s.PKI.WriteCRL(ca, time.Now())
	}
	if err := s.Record(ctx, actor, "admin.client.revoke", "", fmt.Sprintf("client %q serial %s sha256 %s", rec.Name, rec.Serial, rec.Fingerprint)); err != nil {
		return rec, fmt.Errorf("revoked %s (in force), but: %w", rec.Serial, err)
	}
	if crlErr != nil {
		return rec, fmt.Errorf("revoked %s (in force), but the CRL file: %w", rec.Serial, crlErr)
	}
	return rec, nil
}

// RenewServerCert issues the server certificate again now with brokerd's
// CA, for the configured names, and audits it; it returns what it issued,
// in words.
func (s *State) RenewServerCert(ctx context.Context, actor string) (string, error) {
	ca, err := s.PKI.Authority(ctx)
	if err != nil {
		return "", err
	}
	cert, err := s.PKI.IssueServerCert(ctx, ca, time.Now())
	if err != nil {
		return "", err
	}
	if s.daemon != nil {
		if err := s.daemon.ReloadTLS(); err != nil {
			return "", fmt.Errorf("issued serial %s, but the daemon cannot load it: %w", pki.SerialHex(cert), err)
		}
	}
	detail := fmt.Sprintf("server certificate serial %s for %v until %s", pki.SerialHex(cert), s.Config.PKI.ServerNames, cert.NotAfter.UTC().Format(time.RFC3339))
	if err := s.Record(ctx, actor, "admin.tls.renew", s.Config.API.TLSKey, detail); err != nil {
		return "", err
	}
	return detail, nil
}

// CreateKey generates key id inside the TPM and audits it; it returns the
// key and the CSR (DER) the TPM signed.
func (s *State) CreateKey(ctx context.Context, actor, id string, alg tpm.Algorithm, opts keys.CreateOptions) (keys.Info, []byte, error) {
	defer s.longOperation()()
	info, csr, err := s.Keys.Create(ctx, id, alg, opts)
	if err != nil {
		return keys.Info{}, nil, err
	}
	return info, csr, s.Record(ctx, actor, "admin.key.create", info.ID, string(info.Kind)+" "+string(info.Algorithm))
}

// ImportKey stores priv or, when it is nil, the wrapped key w, and audits
// it.
func (s *State) ImportKey(ctx context.Context, actor, id string, priv crypto.Signer, w *tpm.WrappedKey, opts keys.ImportOptions) (keys.Info, error) {
	defer s.longOperation()()
	var info keys.Info
	var err error
	if priv != nil {
		info, err = s.Keys.Import(ctx, id, priv, opts)
	} else {
		info, err = s.Keys.ImportWrapped(ctx, id, w, opts)
	}
	if err != nil {
		return keys.Info{}, err
	}
	return info, s.Record(ctx, actor, "admin.key.import", info.ID, string(info.Kind)+" "+string(info.Algorithm))
}

// longOperation tells the running daemon's health check that a key
// generation holds the TPM until the returned function is called.
func (s *State) longOperation() func() {
	if s.daemon == nil {
		return func() {}
	}
	s.daemon.keygens.Add(1)
	return func() { s.daemon.keygens.Add(-1) }
}

// operatorKey refuses brokerd's own keys (brokerd:*, by id or alias) to an
// operator: the CA, the server's TLS key and the audit key sign, change
// and go only as brokerd itself decides.
func (s *State) operatorKey(name string) error {
	if keys.Reserved(name) {
		return fmt.Errorf("%q is %w: it is used only by brokerd itself", name, keys.ErrReserved)
	}
	if info, err := s.Keys.Info(name); err == nil && keys.Reserved(info.ID) {
		return fmt.Errorf("%q names %q, %w: it is used only by brokerd itself", name, info.ID, keys.ErrReserved)
	}
	return nil
}

// SignData signs data with key id for an operator (brokerd key sign) as
// /sign would: never with brokerd's own keys or a QWAC, never a TLS 1.3
// CertificateVerify content. The signature is returned only once its
// audit record (who, which key, the data's SHA-256) is durable; a refusal
// is recorded too.
func (s *State) SignData(ctx context.Context, actor, id string, data []byte, alg keys.SignAlg, h crypto.Hash) ([]byte, error) {
	sum := sha256.Sum256(data)
	rec := audit.Record{Op: "admin.key.sign", Client: actor, KeyID: id, DataSHA256: hex.EncodeToString(sum[:]), Status: 200}
	sig, used, err := s.signData(ctx, id, data, alg, h)
	rec.Alg = string(used) + "/" + strings.ReplaceAll(h.String(), "-", "") // as /sign records it: ES/SHA256
	if err != nil {
		rec.Status, rec.Error = 403, err.Error()
	}
	if _, aerr := s.Audit.Append(ctx, rec); aerr != nil {
		return nil, fmt.Errorf("no signature: its audit record cannot be written: %w", aerr)
	}
	return sig, err
}

func (s *State) signData(ctx context.Context, id string, data []byte, alg keys.SignAlg, h crypto.Hash) ([]byte, keys.SignAlg, error) {
	if err := s.operatorKey(id); err != nil {
		return nil, alg, err
	}
	info, err := s.Keys.Info(id)
	if err != nil {
		return nil, alg, err
	}
	if err := keys.Signable(info, data); err != nil {
		return nil, alg, err
	}
	return s.Keys.Sign(ctx, info.ID, data, alg, h)
}

// AttachCert sets the certificate chain of key id and adds aliases, and
// audits it.
func (s *State) AttachCert(ctx context.Context, actor, id string, chain []*x509.Certificate, aliases []string) (keys.Info, error) {
	if err := s.operatorKey(id); err != nil {
		return keys.Info{}, err
	}
	info, err := s.Keys.AttachCert(id, chain, aliases)
	if err != nil {
		return keys.Info{}, err
	}
	return info, s.Record(ctx, actor, "admin.key.cert", info.ID, info.Subject+" x5t#S256 "+info.X5tS256)
}

// SetKeyOrigins binds key id to bank origins (none: no binding), and
// audits it.
func (s *State) SetKeyOrigins(ctx context.Context, actor, id string, origins []string) (keys.Info, error) {
	if err := s.operatorKey(id); err != nil {
		return keys.Info{}, err
	}
	info, err := s.Keys.SetOrigins(id, origins)
	if err != nil {
		return keys.Info{}, err
	}
	return info, s.Record(ctx, actor, "admin.key.origins", info.ID, strings.Join(info.Origins, " "))
}

// SetKeyJOSE changes the JOSE defaults of key id (kid, Open Banking iss
// and tan), and audits it.
func (s *State) SetKeyJOSE(ctx context.Context, actor, id string, c keys.JOSEChange) (keys.Info, error) {
	if err := s.operatorKey(id); err != nil {
		return keys.Info{}, err
	}
	info, err := s.Keys.SetJOSE(id, c)
	if err != nil {
		return keys.Info{}, err
	}
	j := info.JOSE
	return info, s.Record(ctx, actor, "admin.key.config", info.ID, fmt.Sprintf("jws_kid %q ob_iss %q ob_tan %q", j.KID, j.OBISS, j.OBTAN))
}

// SetKeyPurpose fixes what key id is for ("" lets its certificate say),
// and audits it.
func (s *State) SetKeyPurpose(ctx context.Context, actor, id string, p keys.Purpose) (keys.Info, error) {
	if err := s.operatorKey(id); err != nil {
		return keys.Info{}, err
	}
	info, err := s.Keys.SetPurpose(id, p)
	if err != nil {
		return keys.Info{}, err
	}
	return info, s.Record(ctx, actor, "admin.key.purpose", info.ID, string(info.Purpose))
}

// DeleteKey deletes key id and audits it.
func (s *State) DeleteKey(ctx context.Context, actor, id string) error {
	if err := s.operatorKey(id); err != nil {
		return err
	}
	if err := s.Keys.Delete(ctx, id); err != nil {
		return err
	}
	return s.Record(ctx, actor, "admin.key.delete", id, "")
}
