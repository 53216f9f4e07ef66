package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"fmt"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/brokerd/brokerd/admin"
	"github.com/brokerd/brokerd/daemon"
	"github.com/brokerd/brokerd/internal/certs"
	"github.com/brokerd/brokerd/pki"
)

// clientFlags are the flags client sign and client issue share.
type clientFlags struct {
	name  *string
	roles multiFlag
	days  *int
}

func addClientFlags(fs *flag.FlagSet) *clientFlags {
	c := &clientFlags{}
	c.name = fs.String("name", "", "the client's `name`: the certificate's common name, what rules match with --cn (a URL is also the URI SAN)")
	fs.Var(&c.roles, "role", "role `URL` written into the certificate's role extension (repeatable)")
	c.days = fs.Int("days", 0, "validity in `days` (default: pki.client_validity)")
	return c
}

// request checks the flags and returns the certificate request they make.
func (c *clientFlags) request() (pki.ClientRequest, error) {
	if *c.days < 0 || *c.days > 3650 {
		return pki.ClientRequest{}, usagef("--days %d out of range 1..3650", *c.days)
	}
	req := pki.ClientRequest{Client: pki.Client{Name: *c.name, Roles: c.roles}, Validity: time.Duration(*c.days) * 24 * time.Hour}
	if err := pki.CheckName(req.Client.Name); err != nil {
		return pki.ClientRequest{}, usagef("%v", err)
	}
	return req, nil
}

func cmdClientSign(ctx context.Context, e *env, args []string) error {
	fs := e.flags("client sign", "--csr FILE --name NAME [--role URL]... [--days N] --out FILE",
		"Certify a client's key with brokerd's CA. The client made its key at its own site and\n"+
			"sent a CSR (PEM or DER): only the CSR travels. The CSR's signature must verify, and no\n"+
			"valid certificate may have the same name (revoke it first).")
	csrFile := e.path(fs, "csr", admin.Read, "the client's certificate signing request `file`")
	out := e.path(fs, "out", admin.Write, "certificate `file` to write (PEM)")
	cf := addClientFlags(fs)
	if err := e.parse(fs, args); err != nil {
		return err
	}
	if err := required(fs, "csr", "name", "out"); err != nil {
		return err
	}
	data, err := e.fs().ReadFile(*csrFile)
	if err != nil {
		return err
	}
	csr, err := parseCSR(data)
	if err != nil {
		return fmt.Errorf("%s: %w", *csrFile, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return fmt.Errorf("%s: the CSR's signature does not verify: it was altered, or not made with the key it carries", *csrFile)
	}
	req, err := cf.request()
	if err != nil {
		return err
	}
	req.CSR = csr
	s, err := e.openState()
	if err != nil {
		return err
	}
	defer s.Close()
	cert, rec, err := e.issueClient(ctx, s, req)
	if err != nil {
		return err
	}
	if err := e.fs().WriteFile(*out, certs.EncodePEM(cert), 0o644); err != nil {
		return fmt.Errorf("certificate %s issued and recorded, but not written (%w): brokerd client list --json has it (field certificate)", rec.Serial, err)
	}
	fmt.Fprintf(e.stdout, "wrote %s: client %q, serial %s, valid until %s\n", *out, rec.Name, rec.Serial, rec.NotAfter.UTC().Format(time.RFC3339))
	return nil
}

func cmdClientIssue(ctx context.Context, e *env, args []string) error {
	fs := e.flags("client issue", "--name NAME --out DIR [--role URL]... [--days N]",
		"Make a client's key (P-256) and certificate here, for quick set-up on a LAN, and write\n"+
			"DIR/NAME.key (mode 0600), DIR/NAME.crt and DIR/ca.crt (to verify the server). The key\n"+
			"exists outside the client for a moment: for production clients prefer client sign.\n"+
			"Characters other than letters, digits, '.', '-' and '_' in NAME become '_' in file names.")
	out := e.path(fs, "out", admin.Dir, "`directory` to write the files to")
	cf := addClientFlags(fs)
	if err := e.parse(fs, args); err != nil {
		return err
	}
	if err := required(fs, "name", "out"); err != nil {
		return err
	}
	req, err := cf.request()
	if err != nil {
		return err
	}
	s, err := e.openState()
	if err != nil {
		return err
	}
	defer s.Close()
	return newClientFiles(ctx, e, s, req, *out)
}

// newClientFiles makes a client key, certifies it and writes the client's
// files to directory out (through e: the caller's files).
func newClientFiles(ctx context.Context, e *env, s *daemon.State, req pki.ClientRequest, out string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	defer clear(keyDER)
	base := filepath.Join(out, fileName(req.Client.Name))
	keyFile, certFile, caFile := base+".key", base+".crt", filepath.Join(out, "ca.crt")
	// The key file is written first, and only where none exists: nothing
	// is issued for a key that could not be handed over.
	req.Key, req.Before = key.Public(), func() error {
		if err := e.fs().MkdirAll(out, 0o755); err != nil {
			return err
		}
		return e.fs().CreateFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
	}
	cert, rec, err := e.issueClient(ctx, s, req)
	if err != nil {
		return err
	}
	ca, err := s.PKI.CACert()
	if err != nil {
		return err
	}
	for _, f := range []struct {
		path string
		data []byte
	}{{certFile, certs.EncodePEM(cert)}, {caFile, certs.EncodePEM(ca)}} {
		if err := e.fs().WriteFile(f.path, f.data, 0o644); err != nil {
			return fmt.Errorf("certificate %s issued and recorded, but not written (%w): brokerd client list --json has it (field certificate)", rec.Serial, err)
		}
	}
	fmt.Fprintf(e.stdout, "wrote %s, %s and %s: client %q, serial %s, valid until %s\n", keyFile, certFile, caFile,
		rec.Name, rec.Serial, rec.NotAfter.UTC().Format(time.RFC3339))
	return nil
}

// issueClient issues a client certificate with brokerd's CA and audits it.
func (e *env) issueClient(ctx context.Context, s *daemon.State, req pki.ClientRequest) (*x509.Certificate, pki.Record, error) {
	cert, rec, err := s.PKI.IssueClient(ctx, req)
	if err != nil {
		return nil, pki.Record{}, err
	}
	if err := e.record(ctx, s, "admin.client.issue", "", rec.Summary()); err != nil {
		return nil, pki.Record{}, err
	}
	return cert, rec, nil
}

func cmdClientList(_ context.Context, e *env, args []string) error {
	fs := e.flags("client list", "[--json]", "List the client certificates brokerd's CA issued: name, serial, status, expiry, roles.")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := e.parse(fs, args); err != nil {
		return err
	}
	s, err := e.openState()
	if err != nil {
		return err
	}
	defer s.Close()
	recs, err := s.PKI.Registry().List()
	if err != nil {
		return err
	}
	now := time.Now()
	type row struct {
		pki.Record
		Status string `json:"status"`
		Cert   []byte `json:"cert,omitempty"` // the record's DER, replaced by PEM below
		PEM    string `json:"certificate"`
	}
	rows := make([]row, 0, len(recs))
	for _, r := range recs {
		rows = append(rows, row{Record: r, Status: r.Status(now), PEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.Cert}))})
	}
	if *asJSON {
		return writeJSON(e.stdout, rows)
	}
	if len(rows) == 0 {
		fmt.Fprintln(e.stdout, "no client certificates issued")
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSERIAL\tSTATUS\tNOT AFTER\tROLES")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Name, r.Serial, r.Status, r.NotAfter.UTC().Format(time.DateOnly), strings.Join(r.Roles, " "))
	}
	return tw.Flush()
}

func cmdClientRevoke(ctx context.Context, e *env, args []string) error {
	fs := e.flags("client revoke", "NAME|SERIAL",
		"Revoke a client certificate, by the client's name (when it has one valid certificate)\n"+
			"or by serial number (as client list shows it). The running daemon refuses the\n"+
			"certificate at once: new handshakes fail, open connections are closed or refused at\n"+
			"their next request. The CRL in tls/crl.pem is signed again.")
	which, err := e.parseArgs(fs, args, 1)
	if err != nil {
		return err
	}
	s, err := e.openState()
	if err != nil {
		return err
	}
	defer s.Close()
	ca, err := s.PKI.Authority(ctx)
	if err != nil {
		return err
	}
	rec, err := s.PKI.Registry().Revoke(which[0], time.Now())
	if err != nil {
		return err
	}
	// Stored: in force at once, whatever fails next.
	if e.daemon != nil {
		e.daemon.ApplyRevocations()
	}
	crlErr := s.PKI.WriteCRL(ca, time.Now())
	if err := e.record(ctx, s, "admin.client.revoke", "", fmt.Sprintf("client %q serial %s sha256 %s", rec.Name, rec.Serial, rec.Fingerprint)); err != nil {
		return fmt.Errorf("revoked %s (in force), but: %w", rec.Serial, err)
	}
	if crlErr != nil {
		return fmt.Errorf("revoked %s (in force), but the CRL file: %w", rec.Serial, crlErr)
	}
	fmt.Fprintf(e.stdout, "revoked client %q (serial %s)\n", rec.Name, rec.Serial)
	return nil
}

// parseCSR reads a PEM or DER certificate request.
func parseCSR(data []byte) (*x509.CertificateRequest, error) {
	if block, _ := pem.Decode(data); block != nil {
		if block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST" {
			return nil, fmt.Errorf("PEM block %q is not a certificate request", block.Type)
		}
		data = block.Bytes
	}
	csr, err := x509.ParseCertificateRequest(data)
	if err != nil {
		return nil, fmt.Errorf("not a certificate request: %w", err)
	}
	return csr, nil
}

// fileName makes a client name safe as a file name.
func fileName(name string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, name)
}
