package store

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ClockInfo is the TPM's clock (milliseconds it has been powered, across
// its life) and its reset and restart counters, as TPM2_ReadClock reports
// them: they never go back, so an old copy of the log shows its age.
type ClockInfo struct {
	Clock        uint64
	ResetCount   uint32
	RestartCount uint32
	Safe         bool
}

// Checkpoint signs the head of the chain with the TPM's audit key, with
// the TPM's clock, and links to the previous checkpoint.
type Checkpoint struct {
	Seq          uint64    `json:"seq"`  // the last record covered
	Head         string    `json:"head"` // its hash
	Time         time.Time `json:"time"`
	TPMClock     uint64    `json:"tpm_clock_ms"`
	ResetCount   uint32    `json:"tpm_reset_count"`
	RestartCount uint32    `json:"tpm_restart_count"`
	ClockSafe    bool      `json:"tpm_clock_safe"`
	Reason       string    `json:"reason"` // startup, count, interval, shutdown
	// Prev is the SHA-256 (hex) of the previous checkpoint's payload.
	Prev      string `json:"prev_checkpoint"`
	Signature []byte `json:"signature,omitempty"`
}

const checkpointDomain = "brokerd-audit-checkpoint/1\n"

// Payload is what the audit key signs (SHA-256 of it).
func (c Checkpoint) Payload() []byte {
	c.Signature = nil
	b, _ := json.Marshal(c)
	return append([]byte(checkpointDomain), b...)
}

func payloadHash(p []byte) string {
	sum := sha256.Sum256(p)
	return hex.EncodeToString(sum[:])
}

// Anchor replaces pruned records: it names the first record kept and the
// hashes the kept records and checkpoints link to, and is signed.
type Anchor struct {
	FirstSeq       uint64    `json:"first_seq"`
	Prev           string    `json:"prev"`            // hash of the last record pruned
	PrevCheckpoint string    `json:"prev_checkpoint"` // payload hash of the last checkpoint pruned
	PrunedBefore   time.Time `json:"pruned_before"`
	Time           time.Time `json:"time"`
	Signature      []byte    `json:"signature,omitempty"`
}

const anchorDomain = "brokerd-audit-anchor/1\n"

// Payload is what the audit key signs (SHA-256 of it).
func (a Anchor) Payload() []byte {
	a.Signature = nil
	b, _ := json.Marshal(a)
	return append([]byte(anchorDomain), b...)
}

// SignFunc signs SHA-256(payload) with the audit key.
type SignFunc func(ctx context.Context, payload []byte) ([]byte, error)

// ClockFunc reads the TPM's clock.
type ClockFunc func(ctx context.Context) (ClockInfo, error)

// lastCheckpoint returns the newest checkpoint and its payload hash.
func lastCheckpoint(tx *bolt.Tx) (*Checkpoint, string, error) {
	_, v := tx.Bucket(bucketCheckpoints).Cursor().Last()
	if v == nil {
		if anc := tx.Bucket(bucketMeta).Get(metaAnchor); anc != nil {
			var a Anchor
			if err := json.Unmarshal(anc, &a); err != nil {
				return nil, "", err
			}
			return nil, a.PrevCheckpoint, nil
		}
		return nil, "", nil
	}
	var c Checkpoint
	if err := json.Unmarshal(v, &c); err != nil {
		return nil, "", err
	}
	return &c, payloadHash(c.Payload()), nil
}

// ClockInfo is the TPM clock the checkpoint carries.
func (c Checkpoint) ClockInfo() ClockInfo {
	return ClockInfo{Clock: c.TPMClock, ResetCount: c.ResetCount, RestartCount: c.RestartCount, Safe: c.ClockSafe}
}

// LastCheckpoint returns the newest checkpoint, or nil when there is none.
func (s *Store) LastCheckpoint() (*Checkpoint, error) {
	var c *Checkpoint
	err := s.db.View(func(tx *bolt.Tx) (err error) {
		c, _, err = lastCheckpoint(tx)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: last checkpoint: %w", err)
	}
	return c, nil
}

// Checkpoint signs the chain's head now, unless nothing was appended since
// the last checkpoint (and reason is not "shutdown" or "startup").
func (s *Store) Checkpoint(ctx context.Context, reason string, sign SignFunc, clock ClockFunc) (*Checkpoint, error) {
	seq, head := s.Head()
	var prev *Checkpoint
	var prevHash string
	if err := s.db.View(func(tx *bolt.Tx) (err error) {
		prev, prevHash, err = lastCheckpoint(tx)
		return err
	}); err != nil {
		return nil, fmt.Errorf("store: checkpoint: %w", err)
	}
	if prev != nil && prev.Seq == seq && reason != "shutdown" && reason != "startup" {
		return nil, nil
	}
	ci, err := clock(ctx)
	if err != nil {
		return nil, fmt.Errorf("store: checkpoint: read the TPM clock: %w", err)
	}
	c := Checkpoint{Seq: seq, Head: head, Time: time.Now().UTC(), TPMClock: ci.Clock, ResetCount: ci.ResetCount,
		RestartCount: ci.RestartCount, ClockSafe: ci.Safe, Reason: reason, Prev: prevHash}
	if c.Signature, err = sign(ctx, c.Payload()); err != nil {
		return nil, fmt.Errorf("store: checkpoint: sign: %w", err)
	}
	data, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketCheckpoints)
		if _, h, err := lastCheckpoint(tx); err != nil || h != prevHash {
			return errors.New("another checkpoint was written meanwhile")
		}
		n, err := b.NextSequence()
		if err != nil {
			return err
		}
		return b.Put(be64(n), data)
	})
	if err != nil {
		return nil, fmt.Errorf("store: checkpoint: %w", err)
	}
	return &c, nil
}

// RunCheckpoints signs a checkpoint every `every` records and every
// interval (when records came), until ctx ends; then a last one.
func (s *Store) RunCheckpoints(ctx context.Context, every uint64, interval time.Duration, sign SignFunc, clock ClockFunc, onErr func(error)) {
	last, _ := s.Head() // the last record a checkpoint covers
	try := func(reason string) {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := s.Checkpoint(cctx, reason, sign, clock)
		if err != nil {
			onErr(err)
		} else if c != nil {
			last = c.Seq
		}
	}
	try("startup")
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			try("shutdown")
			return
		case <-tick.C:
			try("interval")
		case <-s.audit.committed:
			if seq, _ := s.Head(); seq-last >= every {
				try("count")
			}
		}
	}
}

// Prune removes records older than before that a checkpoint covers, with
// the checkpoints that cover only them, and leaves a signed anchor from
// which verification starts. It returns how many records it removed.
func (s *Store) Prune(ctx context.Context, before time.Time, sign SignFunc) (int, error) {
	var (
		anchor  = Anchor{PrunedBefore: before.UTC(), Time: time.Now().UTC()}
		lastCov uint64 // last record a checkpoint covers
		cutSeq  uint64 // last record to remove
		cutCkpt []byte // last checkpoint key to remove
	)
	err := s.db.View(func(tx *bolt.Tx) error {
		cps := tx.Bucket(bucketCheckpoints).Cursor()
		if _, v := cps.Last(); v != nil {
			var c Checkpoint
			if err := json.Unmarshal(v, &c); err != nil {
				return err
			}
			lastCov = c.Seq
		}
		cur := tx.Bucket(bucketAudit).Cursor()
		for k, v := cur.First(); k != nil; k, v = cur.Next() {
			var r AuditRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			if !r.Time.Before(before) || r.Seq >= lastCov {
				break
			}
			cutSeq = r.Seq
			sum := sha256.Sum256(v)
			anchor.Prev = hex.EncodeToString(sum[:])
		}
		if cutSeq == 0 {
			return nil
		}
		anchor.FirstSeq = cutSeq + 1
		_, anchor.PrevCheckpoint, _ = lastCheckpoint(tx)
		if anc := tx.Bucket(bucketMeta).Get(metaAnchor); anc != nil {
			var old Anchor
			json.Unmarshal(anc, &old)
			anchor.PrevCheckpoint = old.PrevCheckpoint
		}
		for k, v := cps.First(); k != nil; k, v = cps.Next() {
			var c Checkpoint
			if err := json.Unmarshal(v, &c); err != nil {
				return err
			}
			if c.Seq > cutSeq {
				break
			}
			cutCkpt = append([]byte(nil), k...)
			anchor.PrevCheckpoint = payloadHash(c.Payload())
		}
		return nil
	})
	if err != nil || cutSeq == 0 {
		return 0, err
	}
	if anchor.Signature, err = sign(ctx, anchor.Payload()); err != nil {
		return 0, fmt.Errorf("store: prune: sign the anchor: %w", err)
	}
	data, _ := json.Marshal(anchor)
	n := 0
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAudit)
		cur := b.Cursor()
		for k, _ := cur.First(); k != nil && binary.BigEndian.Uint64(k) <= cutSeq; k, _ = cur.First() {
			if err := b.Delete(k); err != nil {
				return err
			}
			n++
		}
		cps := tx.Bucket(bucketCheckpoints)
		cc := cps.Cursor()
		for k, _ := cc.First(); k != nil && cutCkpt != nil && string(k) <= string(cutCkpt); k, _ = cc.First() {
			if err := cps.Delete(k); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketMeta).Put(metaAnchor, data)
	})
	if err != nil {
		return 0, fmt.Errorf("store: prune: %w", err)
	}
	return n, nil
}

// verifySig checks an audit-key signature over SHA-256(payload).
func verifySig(pub crypto.PublicKey, payload, sig []byte) bool {
	digest := sha256.Sum256(payload)
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return ecdsa.VerifyASN1(k, digest[:], sig)
	case *rsa.PublicKey:
		return rsa.VerifyPKCS1v15(k, crypto.SHA256, digest[:], sig) == nil
	}
	return false
}
