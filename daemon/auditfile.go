package daemon

import (
	"bufio"
	"crypto"
	"fmt"
	"io"
	"time"

	"github.com/brokerd/brokerd/audit"
	"github.com/brokerd/brokerd/keys"
	"github.com/brokerd/brokerd/store"
)

// openAuditLog opens the audit log of the state file at path read-only,
// or lends d's own when path is the running daemon's; release gives it
// back.
func openAuditLog(path string, d *Daemon) (l *audit.Log, st *store.Store, release func(), err error) {
	if d != nil && path == d.Config().StatePath() {
		s := d.State()
		return s.Audit, s.Store, func() {}, nil
	}
	return audit.OpenFile(path, 2*time.Second)
}

// VerifyAudit verifies the audit log of the state file at path (d's own
// when d runs and path is its file) with pub, or, when pub is nil, with
// the audit key recorded in the file itself (fromFile says so: an auditor
// should give the key kept apart).
func VerifyAudit(path string, pub crypto.PublicKey, d *Daemon) (rep *audit.Report, fromFile bool, err error) {
	l, st, release, err := openAuditLog(path, d)
	if err != nil {
		return nil, false, err
	}
	defer release()
	if pub == nil {
		if pub, err = keys.ReadPublic(st, AuditKeyID); err != nil {
			return nil, false, fmt.Errorf("no audit key in %s (give --pub): %w", path, err)
		}
		fromFile = true
	}
	rep, err = l.Verify(pub)
	return rep, fromFile, err
}

// ExportAudit writes the records of the state file at path with a time in
// [since, until) to w, one JSON object a line, exactly as stored.
func ExportAudit(w io.Writer, path string, since, until time.Time, d *Daemon) error {
	l, _, release, err := openAuditLog(path, d)
	if err != nil {
		return err
	}
	defer release()
	bw := bufio.NewWriter(w)
	err = l.Records(since, until, func(_ audit.Record, raw []byte) error {
		bw.Write(raw)
		return bw.WriteByte('\n')
	})
	if err != nil {
		return err
	}
	return bw.Flush()
}
