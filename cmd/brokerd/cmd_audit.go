package main

import (
	"bufio"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/brokerd/brokerd/admin"
	"github.com/brokerd/brokerd/audit"
	"github.com/brokerd/brokerd/daemon"
	"github.com/brokerd/brokerd/keys"
	"github.com/brokerd/brokerd/store"
)

// record audits an administrative change made from the command line.
func (e *env) record(ctx context.Context, s *daemon.State, op, keyID, detail string) error {
	return s.Record(ctx, e.actor(), op, keyID, detail)
}

// watched names the files the daemon watches that commands change.
type watched int

const (
	policyFile watched = iota
	trustDir
)

// fileChanged audits a change to a file the daemon watches (the policy,
// the bank CAs) and, inside the daemon, puts it in force at once. Without
// a daemon the record goes into the state file here; a state file held by
// another process (a daemon without its admin socket) records the reload
// itself when it sees the change.
func (e *env) fileChanged(ctx context.Context, what watched, op, detail string) error {
	if e.daemon != nil {
		if err := e.record(ctx, e.daemon.State(), op, "", detail); err != nil {
			return err
		}
		if what == policyFile {
			return e.daemon.ReloadPolicy()
		}
		return e.daemon.ReloadTrust()
	}
	cfg, err := e.loadConfig()
	if err != nil {
		return err
	}
	st, err := store.Open(cfg.StatePath(), store.Options{})
	if errors.Is(err, store.ErrLocked) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("the change is made but its audit record is not: %w", err)
	}
	defer st.Close()
	log, err := audit.OpenWith(st, audit.Options{MinFree: cfg.Audit.MinFree})
	if err != nil {
		return fmt.Errorf("the change is made but its audit record is not: %w", err)
	}
	defer log.Close()
	if _, err := log.Append(ctx, audit.Record{Op: op, Client: e.actor(), Detail: detail, Status: 200}); err != nil {
		return fmt.Errorf("the change is made but its audit record is not: %w", err)
	}
	return nil
}

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
	defer s.Close()
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

// openReadOnly opens the audit log of a state file read-only, or lends
// the daemon's when the command runs inside it; release gives it back. A
// file another process holds is not waited for: the error says what to do.
func (e *env) openReadOnly(path string) (l *audit.Log, st *store.Store, release func(), err error) {
	if e.daemon != nil && path == e.daemon.Config().StatePath() {
		s := e.daemon.State()
		return s.Audit, s.Store, func() {}, nil
	}
	st, err = store.Open(path, store.Options{ReadOnly: true, Timeout: 2 * time.Second})
	if errors.Is(err, store.ErrLocked) {
		return nil, nil, nil, fmt.Errorf("%s is held by another process (a daemon without its admin socket?): stop it, copy the file, and give the copy with --db", path)
	}
	if err != nil {
		return nil, nil, nil, err
	}
	if l, err = audit.Open(st); err != nil {
		st.Close()
		return nil, nil, nil, err
	}
	return l, st, func() { l.Close(); st.Close() }, nil
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
		if pub, err = e.readPublicKey(*pubFile); err != nil {
			return err
		}
	}
	l, st, release, err := e.openReadOnly(path)
	if err != nil {
		return err
	}
	defer release()
	if pub == nil {
		if pub, err = keys.ReadPublic(st, daemon.AuditKeyID); err != nil {
			return fmt.Errorf("no audit key in %s (give --pub): %w", path, err)
		}
		fmt.Fprintln(e.stderr, "note: using the audit key recorded in the file itself; an auditor should give --pub")
	}
	rep, err := l.Verify(pub)
	if err != nil {
		return err
	}
	if *asJSON {
		if err := writeJSON(e.stdout, rep); err != nil {
			return err
		}
	} else {
		printReport(e, rep)
	}
	if !rep.OK() {
		return errors.New(rep.Problem)
	}
	return nil
}

func printReport(e *env, rep *audit.Report) {
	if !rep.OK() {
		// Counts stop where verification stopped: they would mislead.
		fmt.Fprintf(e.stdout, "FAILED: %s\n", rep.Problem)
		return
	}
	if rep.Pruned != nil {
		fmt.Fprintf(e.stdout, "records before %d were pruned (before %s); the signed anchor holds\n",
			rep.Pruned.FirstSeq, rep.Pruned.PrunedBefore.Format(time.RFC3339))
	}
	fmt.Fprintf(e.stdout, "%d records (%d to %d), %d checkpoints\n", rep.Records, rep.FirstSeq, rep.LastSeq, rep.Checkpoints)
	if c := rep.LastCheckpoint; c != nil {
		fmt.Fprintf(e.stdout, "last checkpoint: record %d at %s (TPM clock %d ms, reset %d, restart %d)\n",
			c.Seq, c.Time.Format(time.RFC3339), c.TPMClock, c.ResetCount, c.RestartCount)
	}
	if rep.Uncovered > 0 {
		fmt.Fprintf(e.stdout, "%d records after the last checkpoint are not signed yet\n", rep.Uncovered)
	}
	fmt.Fprintln(e.stdout, "ok")
}

func (e *env) readPublicKey(path string) (crypto.PublicKey, error) {
	data, err := e.fs().ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("%s: no PEM public key", path)
	}
	return x509.ParsePKIXPublicKey(block.Bytes)
}

// parseTime reads RFC 3339 or a date (midnight UTC).
func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return time.Time{}, usagef("time %q: want 2026-03-01 or 2026-03-01T12:00:00Z", s)
	}
	return t, nil
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
	from, err := parseTime(*since)
	if err != nil {
		return err
	}
	to, err := parseTime(*until)
	if err != nil {
		return err
	}
	path, err := e.auditDB(*db)
	if err != nil {
		return err
	}
	l, _, release, err := e.openReadOnly(path)
	if err != nil {
		return err
	}
	defer release()
	w := bufio.NewWriter(e.stdout)
	err = l.Records(from, to, func(_ audit.Record, raw []byte) error {
		w.Write(raw)
		return w.WriteByte('\n')
	})
	if err != nil {
		return err
	}
	return w.Flush()
}
