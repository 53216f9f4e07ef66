package daemon

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"os"
	"time"

	"github.com/brokerd/brokerd/audit"
)

// record audits an event of the daemon itself (actor "daemon").
func (d *Daemon) record(op, keyID, detail string, failed error) {
	rec := audit.Record{Op: op, Client: "daemon", KeyID: keyID, Detail: detail, Status: 200}
	if failed != nil {
		rec.Status, rec.Error = 500, failed.Error()
	}
	if _, err := d.state.Audit.Append(context.Background(), rec); err != nil {
		d.log.Error("audit", "op", op, "err", err)
	}
}

// handshakeRefused counts a client certificate refused at the handshake;
// flushRecords puts the counts on record every minute.
func (d *Daemon) handshakeRefused(remote string, presented []*x509.Certificate, reason error) {
	if rec := d.refused.add(remote, presented, reason); rec != nil {
		if _, err := d.state.Audit.Append(context.Background(), *rec); err != nil {
			d.log.Error("audit", "op", rec.Op, "err", err)
		}
	}
}

// flushRecords writes the records counted rather than written one by one
// (refused handshakes, refusals beyond a client's quota), every interval
// until ctx ends, and once more then.
func (d *Daemon) flushRecords(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		for _, rec := range d.refused.take() {
			if _, err := d.state.Audit.Append(context.Background(), rec); err != nil {
				d.log.Error("audit", "op", rec.Op, "err", err)
			}
		}
		d.api.FlushQuota(context.Background())
		if ctx.Err() != nil {
			return
		}
	}
}

// What is in force goes on record at start and after every reload: the
// policy file's SHA-256, the bank CAs' fingerprints, the CRL files'.

func (d *Daemon) policyState() string {
	return fmt.Sprintf("%d rules from %s (sha256 %s)", len(d.pol.Policy().Rules), d.cfg.Policy.File, filesSHA256(d.cfg.Policy.File))
}

func (d *Daemon) trustState() string {
	s := fmt.Sprintf("%d bank CAs from %s", len(d.trust.CAs()), d.cfg.Bank.TrustDir)
	for _, ca := range d.trust.CAs() {
		s += " " + ca.Fingerprint
	}
	return s
}

func (d *Daemon) crlState() string {
	return fmt.Sprintf("CRL files %v (sha256 %s)", d.cfg.API.CRLFiles, filesSHA256(d.cfg.API.CRLFiles...))
}

func (d *Daemon) tlsState() string {
	return fmt.Sprintf("server certificate %s, client CAs %s (sha256 %s, %s)", d.cfg.API.TLSCert, d.cfg.API.ClientCA,
		filesSHA256(d.cfg.API.TLSCert), filesSHA256(d.cfg.API.ClientCA))
}

// filesSHA256 is the hex SHA-256 of the files' contents, in order; "none"
// for one file that cannot be read (a missing policy file means no rules).
func filesSHA256(paths ...string) string {
	h := sha256.New()
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil && len(paths) == 1 {
			return "none"
		}
		h.Write(data)
	}
	return hex.EncodeToString(h.Sum(nil))
}
