package audit

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
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
	var v []byte
	if b := tx.Bucket(bucketCheckpoints); b != nil {
		_, v = b.Cursor().Last()
	}
	if v == nil {
		a, err := readAnchor(tx)
		if a == nil || err != nil {
			return nil, "", err
		}
		return nil, a.PrevCheckpoint, nil
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
func (l *Log) LastCheckpoint() (*Checkpoint, error) {
	var c *Checkpoint
	err := l.db.View(func(tx *bolt.Tx) (err error) {
		c, _, err = lastCheckpoint(tx)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("audit: last checkpoint: %w", err)
	}
	return c, nil
}

// Checkpoint signs the chain's head now, unless nothing was appended since
// the last checkpoint (and reason is not "shutdown" or "startup").
func (l *Log) Checkpoint(ctx context.Context, reason string, sign SignFunc, clock ClockFunc) (*Checkpoint, error) {
	seq, head := l.Head()
	var prev *Checkpoint
	var prevHash string
	if err := l.db.View(func(tx *bolt.Tx) (err error) {
		prev, prevHash, err = lastCheckpoint(tx)
		return err
	}); err != nil {
		return nil, fmt.Errorf("audit: checkpoint: %w", err)
	}
	if prev != nil && prev.Seq == seq && reason != "shutdown" && reason != "startup" {
		return nil, nil
	}
	ci, err := clock(ctx)
	if err != nil {
		return nil, fmt.Errorf("audit: checkpoint: read the TPM clock: %w", err)
	}
	c := Checkpoint{Seq: seq, Head: head, Time: time.Now().UTC(), TPMClock: ci.Clock, ResetCount: ci.ResetCount,
		RestartCount: ci.RestartCount, ClockSafe: ci.Safe, Reason: reason, Prev: prevHash}
	if c.Signature, err = sign(ctx, c.Payload()); err != nil {
		return nil, fmt.Errorf("audit: checkpoint: sign: %w", err)
	}
	data, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	err = l.db.Update(func(tx *bolt.Tx) error {
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
		return nil, fmt.Errorf("audit: checkpoint: %w", err)
	}
	return &c, nil
}

// Checkpoint cadence unless configured otherwise: every this many records,
// and every interval when records came.
const (
	DefaultCheckpointEvery    = 1000
	DefaultCheckpointInterval = 5 * time.Minute
)

// RunCheckpoints signs a checkpoint every `every` records and every
// interval (when records came), until ctx ends; then a last one.
func (l *Log) RunCheckpoints(ctx context.Context, every uint64, interval time.Duration, sign SignFunc, clock ClockFunc, onErr func(error)) {
	last, _ := l.Head() // the last record a checkpoint covers
	try := func(reason string) {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := l.Checkpoint(cctx, reason, sign, clock)
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
		case <-l.committed:
			if seq, _ := l.Head(); seq-last >= every {
				try("count")
			}
		}
	}
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

// KeySigner returns the SignFunc of the audit key signer: ECDSA or RSA
// PKCS #1 v1.5 over SHA-256(payload).
func KeySigner(signer crypto.Signer) SignFunc {
	return func(_ context.Context, payload []byte) ([]byte, error) {
		digest := sha256.Sum256(payload)
		return signer.Sign(rand.Reader, digest[:], crypto.SHA256)
	}
}

// CheckClock compares the TPM's clock now with the last checkpoint's: a
// TPM whose state was restored from an older copy, or another TPM, shows a
// clock that went back.
func (l *Log) CheckClock(ctx context.Context, clock ClockFunc) error {
	last, err := l.LastCheckpoint()
	if err != nil || last == nil {
		return err
	}
	now, err := clock(ctx)
	if err != nil {
		return fmt.Errorf("audit: read the TPM clock: %w", err)
	}
	return ClockFollows(last, now)
}
