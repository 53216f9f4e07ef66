package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/brokerd/brokerd/admin"
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
	if err := e.parse(fs, args, "csr", "name", "out"); err != nil {
		return err
	}
	csr, err := readAs(e, *csrFile, pki.ParseCSR)
	if err != nil {
		return err
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
	rec, err := s.IssueClientCert(ctx, e.actor(), req, *out, e.fs())
	if err != nil {
		return err
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
	if err := e.parse(fs, args, "name", "out"); err != nil {
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
	f, rec, err := s.IssueClientFiles(ctx, e.actor(), req, *out, e.fs())
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "wrote %s, %s and %s: client %q, serial %s, valid until %s\n", f.Key, f.Cert, f.CA,
		rec.Name, rec.Serial, rec.NotAfter.UTC().Format(time.RFC3339))
	return nil
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
	rows, err := s.PKI.Registry().Listing(time.Now())
	if err != nil {
		return err
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
	rec, err := s.RevokeClient(ctx, e.actor(), which[0])
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "revoked client %q (serial %s)\n", rec.Name, rec.Serial)
	return nil
}
