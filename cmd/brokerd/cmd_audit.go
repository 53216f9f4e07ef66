package main

import (
	"context"
	"crypto"
	"errors"
	"fmt"

	"github.com/brokerd/brokerd/admin"
	"github.com/brokerd/brokerd/audit"
	"github.com/brokerd/brokerd/daemon"
	"github.com/brokerd/brokerd/internal/certs"
)

func cmdAuditPubkey(ctx context.Context, e *env, args []string) error {
	fs := e.flags("audit pubkey", "[--out FILE]",
		"Print the public key that verifies the audit log's checkpoints (PEM). Keep a copy\n"+
			"off the appliance: with it, brokerd audit verify checks a copied log anywhere.")
	out := e.path(fs, "out", admin.Write, "write to this `file` instead of standard output")
	if err := e.parse(fs, args); err != nil {
		return err
	}
	s, err := e.openState()
	if err != nil {
		return err
	}
	signer, err := s.AuditKey(ctx)
	if err != nil {
		return err
	}
	return e.writePublicKey(signer.Public(), *out)
}

// auditDB returns the state file the audit commands read: --db, else the
// configuration's.
func (e *env) auditDB(db string) (string, error) {
	if db != "" {
		return db, nil
	}
	cfg, err := e.loadConfig()
	if err != nil {
		return "", err
	}
	return cfg.StatePath(), nil
}

func cmdAuditVerify(_ context.Context, e *env, args []string) error {
	fs := e.flags("audit verify", "[--pub FILE] [--db FILE] [--json]",
		"Verify the audit log: every record's link to the one before, the sequence, the\n"+
			"checkpoints' signatures and links, the TPM clock never going back, and that no\n"+
			"signed record is missing. Works offline on a copy with only the audit public key\n"+
			"(brokerd audit pubkey). Reports the first problem and exits 1 when there is one.")
	pubFile := e.path(fs, "pub", admin.Read, "audit public key `file` (default: the key recorded in the state file itself)")
	db := fs.String("db", "", "state `file` to verify (default: the configuration's)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := e.parse(fs, args); err != nil {
		return err
	}
	path, err := e.auditDB(*db)
	if err != nil {
		return err
	}
	var pub crypto.PublicKey
	if *pubFile != "" {
		if pub, err = readAs(e, *pubFile, certs.ParsePublicKey); err != nil {
			return err
		}
	}
	rep, fromFile, err := daemon.VerifyAudit(path, pub, e.daemon)
	if err != nil {
		return err
	}
	if fromFile {
		fmt.Fprintln(e.stderr, "note: using the audit key recorded in the file itself; an auditor should give --pub")
	}
	if *asJSON {
		err = writeJSON(e.stdout, rep)
	} else {
		err = rep.WriteText(e.stdout)
	}
	if err != nil {
		return err
	}
	if !rep.OK() {
		return errors.New(rep.Problem)
	}
	return nil
}

func cmdAuditExport(_ context.Context, e *env, args []string) error {
	fs := e.flags("audit export", "[--since T] [--until T] [--format jsonl] [--db FILE]",
		"Print audit records, one JSON object per line, exactly as stored (so their hashes can\n"+
			"be checked). --since includes, --until excludes; times are 2026-03-01 or RFC 3339.")
	since := fs.String("since", "", "first `time`")
	until := fs.String("until", "", "end `time` (excluded)")
	format := fs.String("format", "jsonl", "`format`: jsonl")
	db := fs.String("db", "", "state `file` (default: the configuration's)")
	if err := e.parse(fs, args); err != nil {
		return err
	}
	if *format != "jsonl" {
		return usagef("--format %q: only jsonl", *format)
	}
	from, err := audit.ParseTime(*since)
	if err != nil {
		return usagef("--since: %v", err)
	}
	to, err := audit.ParseTime(*until)
	if err != nil {
		return usagef("--until: %v", err)
	}
	path, err := e.auditDB(*db)
	if err != nil {
		return err
	}
	return daemon.ExportAudit(e.stdout, path, from, to, e.daemon)
}
