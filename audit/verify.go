package audit

import (
	"crypto"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/brokerd/brokerd/store"
)

// Report is what Verify found.
type Report struct {
	Records     int    `json:"records"`
	FirstSeq    uint64 `json:"first_seq"`
	LastSeq     uint64 `json:"last_seq"`
	Checkpoints int    `json:"checkpoints"`
	// Pruned is set when older records were pruned; verification starts
	// at the anchor's first record.
	Pruned *Anchor `json:"pruned,omitempty"`
	// LastCheckpoint is the newest valid checkpoint.
	LastCheckpoint *Checkpoint `json:"last_checkpoint,omitempty"`
	// Uncovered is how many records follow the last checkpoint (not yet
	// signed; they can be cut without trace).
	Uncovered uint64 `json:"uncovered"`
	// Problem is the first problem found; empty when the log verifies.
	Problem string `json:"problem,omitempty"`
}

// OK reports whether the log verified.
func (r *Report) OK() bool { return r.Problem == "" }

// VerifyFile checks the audit log of the state file at path (best a copy;
// it is opened read-only) with the audit public key; see Verify.
func VerifyFile(path string, pub crypto.PublicKey) (*Report, error) {
	st, err := store.Open(path, store.Options{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	l, err := Open(st)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	return l.Verify(pub)
}

// Verify checks the log with the audit public key: every record's link to
// its predecessor, the sequence, every checkpoint's signature, its link to
// the previous checkpoint and the record it signs, the TPM clock never
// going back, the anchor of pruned records, and that no record a
// checkpoint signed is missing at the end. It stops at the first problem.
func (l *Log) Verify(pub crypto.PublicKey) (*Report, error) {
	rep := &Report{}
	err := l.db.View(func(tx *bolt.Tx) error {
		v := &verifier{tx: tx, pub: pub, rep: rep}
		v.run()
		return nil
	})
	return rep, err
}

type verifier struct {
	tx  *bolt.Tx
	pub crypto.PublicKey
	rep *Report
	// checkpoints by the record they sign.
	bySeq map[uint64][]Checkpoint
}

func (v *verifier) fail(format string, args ...any) {
	if v.rep.Problem == "" {
		v.rep.Problem = fmt.Sprintf(format, args...)
	}
}

func (v *verifier) run() {
	records, cps := v.tx.Bucket(bucketAudit), v.tx.Bucket(bucketCheckpoints)
	if records == nil || cps == nil {
		v.fail("the file holds no audit log")
		return
	}
	next, prev, prevCP := uint64(1), genesis, ""
	a, err := readAnchor(v.tx)
	if err != nil {
		v.fail("the anchor of pruned records is not valid")
		return
	}
	if a != nil {
		if !verifySig(v.pub, a.Payload(), a.Signature) {
			v.fail("the anchor of pruned records has an invalid signature")
			return
		}
		v.rep.Pruned = a
		next, prev, prevCP = a.FirstSeq, a.Prev, a.PrevCheckpoint
	}
	if !v.checkpoints(cps, prevCP) {
		return
	}
	v.rep.FirstSeq = next
	cur := records.Cursor()
	for k, val := cur.First(); k != nil; k, val = cur.Next() {
		at := binary.BigEndian.Uint64(k)
		var r Record
		if err := json.Unmarshal(val, &r); err != nil {
			v.fail("record %d is not a valid record: it was changed", at)
			return
		}
		switch {
		case r.Seq != at:
			v.fail("the record stored as %d says it is record %d: records were reordered", at, r.Seq)
			return
		case at < next:
			v.fail("record %d stands before the anchor of pruned records (first kept: %d)", at, next)
			return
		case at > next && next+1 == at:
			v.fail("record %d is missing", next)
			return
		case at > next:
			v.fail("records %d to %d are missing", next, at-1)
			return
		case r.Prev != prev:
			if at == v.rep.FirstSeq {
				v.fail("record %d does not link to the start of the log (or to the anchor): it was changed", at)
			} else {
				v.fail("record %d was changed: its hash does not match the link in record %d", at-1, at)
			}
			return
		}
		sum := sha256.Sum256(val)
		prev = hex.EncodeToString(sum[:])
		for _, c := range v.bySeq[at] {
			if c.Head != prev {
				v.fail("record %d was changed: it does not match the checkpoint signed at %s", at, c.Time.Format(time.RFC3339))
				return
			}
		}
		v.rep.Records++
		v.rep.LastSeq = at
		next = at + 1
	}
	if v.rep.Records == 0 {
		v.rep.LastSeq = next - 1
	}
	if lc := v.rep.LastCheckpoint; lc != nil {
		if lc.Seq > v.rep.LastSeq {
			v.fail("the log was truncated: it ends at record %d, but a checkpoint signed records up to %d", v.rep.LastSeq, lc.Seq)
			return
		}
		v.rep.Uncovered = v.rep.LastSeq - lc.Seq
	} else {
		v.rep.Uncovered = v.rep.LastSeq - v.rep.FirstSeq + 1
	}
}

// ClockFollows checks that TPM clock c can follow that of checkpoint prev
// as a TPM's clock does: the reset counter never goes back (only clearing
// the TPM resets it, and that destroys the audit key too), and the clock
// never goes back within one reset period. Across a reset, the clock may
// resume from its last saved value after a power loss, below what it
// reported before, but then the TPM says the clock is not safe.
func ClockFollows(prev *Checkpoint, c ClockInfo) error {
	switch {
	case c.ResetCount < prev.ResetCount:
		return fmt.Errorf("carries a TPM reset counter of %d, below the %d of the checkpoint before it: the TPM's state went back (restored from an older copy) or the log comes from another TPM",
			c.ResetCount, prev.ResetCount)
	case c.Clock >= prev.TPMClock:
		return nil
	case c.ResetCount == prev.ResetCount:
		return fmt.Errorf("carries a TPM clock of %d ms, below the %d ms of the checkpoint before it without a reset in between: the TPM's state went back",
			c.Clock, prev.TPMClock)
	case c.Safe:
		return fmt.Errorf("carries a TPM clock of %d ms, below the %d ms of the checkpoint before it, yet the TPM calls its clock safe: the TPM's state went back",
			c.Clock, prev.TPMClock)
	}
	return nil // a power loss: the TPM said so
}

// checkpoints verifies every checkpoint's signature, the chain of
// checkpoints from prev, and that the TPM clock never goes back.
func (v *verifier) checkpoints(cps *bolt.Bucket, prev string) bool {
	v.bySeq = map[uint64][]Checkpoint{}
	var last *Checkpoint
	n := 0
	err := cps.ForEach(func(_, raw []byte) error {
		n++
		var c Checkpoint
		if err := json.Unmarshal(raw, &c); err != nil {
			return fmt.Errorf("checkpoint %d is not valid", n)
		}
		if !verifySig(v.pub, c.Payload(), c.Signature) {
			return fmt.Errorf("checkpoint %d (at record %d, %s) has an invalid signature: it was changed or not made by this appliance's audit key",
				n, c.Seq, c.Time.Format(time.RFC3339))
		}
		if c.Prev != prev {
			return fmt.Errorf("checkpoint %d (at record %d) does not follow the one before it: a checkpoint was removed or reordered", n, c.Seq)
		}
		if last != nil {
			switch {
			case c.Seq < last.Seq:
				return fmt.Errorf("checkpoint %d signs record %d, before the %d of the checkpoint before it", n, c.Seq, last.Seq)
			default:
				if err := ClockFollows(last, c.ClockInfo()); err != nil {
					return fmt.Errorf("checkpoint %d (at record %d, %s) %w", n, c.Seq, c.Time.Format(time.RFC3339), err)
				}
			}
		}
		prev = payloadHash(c.Payload())
		v.bySeq[c.Seq] = append(v.bySeq[c.Seq], c)
		last = &c
		return nil
	})
	if err != nil {
		v.fail("%v", err)
		return false
	}
	v.rep.Checkpoints = n
	v.rep.LastCheckpoint = last
	return true
}
