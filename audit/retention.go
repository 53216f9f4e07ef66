package audit

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	bolt "go.etcd.io/bbolt"
)

// pruneCut is what Prune removes: records up to seq, checkpoints up to
// the key ckpt (nil: none), replaced by anchor.
type pruneCut struct {
	anchor Anchor
	seq    uint64
	ckpt   []byte
}

// Prune removes records older than before that a checkpoint covers, with
// the checkpoints that cover only them, and leaves a signed anchor from
// which verification starts. It returns how many records it removed.
func (l *Log) Prune(ctx context.Context, before time.Time, sign SignFunc) (int, error) {
	cut := pruneCut{anchor: Anchor{PrunedBefore: before.UTC(), Time: time.Now().UTC()}}
	err := l.db.View(func(tx *bolt.Tx) error { return cut.find(tx, before) })
	if err != nil || cut.seq == 0 {
		if err != nil {
			err = fmt.Errorf("audit: prune: %w", err)
		}
		return 0, err
	}
	if cut.anchor.Signature, err = sign(ctx, cut.anchor.Payload()); err != nil {
		return 0, fmt.Errorf("audit: prune: sign the anchor: %w", err)
	}
	n := 0
	err = l.db.Update(func(tx *bolt.Tx) (err error) {
		n, err = cut.apply(tx)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("audit: prune: %w", err)
	}
	return n, nil
}

// find sets the cut: the records before `before` that a checkpoint
// covers, and the checkpoints that cover only them.
func (c *pruneCut) find(tx *bolt.Tx, before time.Time) error {
	var lastCov uint64 // last record a checkpoint covers
	cps := tx.Bucket(bucketCheckpoints).Cursor()
	if _, v := cps.Last(); v != nil {
		var cp Checkpoint
		if err := json.Unmarshal(v, &cp); err != nil {
			return err
		}
		lastCov = cp.Seq
	}
	cur := tx.Bucket(bucketAudit).Cursor()
	for k, v := cur.First(); k != nil; k, v = cur.Next() {
		var r Record
		if err := json.Unmarshal(v, &r); err != nil {
			return err
		}
		if !r.Time.Before(before) || r.Seq >= lastCov {
			break
		}
		c.seq = r.Seq
		sum := sha256.Sum256(v)
		c.anchor.Prev = hex.EncodeToString(sum[:])
	}
	if c.seq == 0 {
		return nil
	}
	c.anchor.FirstSeq = c.seq + 1
	_, c.anchor.PrevCheckpoint, _ = lastCheckpoint(tx)
	if old, _ := readAnchor(tx); old != nil {
		c.anchor.PrevCheckpoint = old.PrevCheckpoint
	}
	for k, v := cps.First(); k != nil; k, v = cps.Next() {
		var cp Checkpoint
		if err := json.Unmarshal(v, &cp); err != nil {
			return err
		}
		if cp.Seq > c.seq {
			break
		}
		c.ckpt = append([]byte(nil), k...)
		c.anchor.PrevCheckpoint = payloadHash(cp.Payload())
	}
	return nil
}

// apply deletes what the cut names and stores its anchor.
func (c *pruneCut) apply(tx *bolt.Tx) (int, error) {
	n := 0
	b := tx.Bucket(bucketAudit)
	cur := b.Cursor()
	for k, _ := cur.First(); k != nil && binary.BigEndian.Uint64(k) <= c.seq; k, _ = cur.First() {
		if err := b.Delete(k); err != nil {
			return 0, err
		}
		n++
	}
	cps := tx.Bucket(bucketCheckpoints)
	cc := cps.Cursor()
	for k, _ := cc.First(); k != nil && c.ckpt != nil && string(k) <= string(c.ckpt); k, _ = cc.First() {
		if err := cps.Delete(k); err != nil {
			return 0, err
		}
	}
	data, err := json.Marshal(c.anchor)
	if err != nil {
		return 0, err
	}
	return n, tx.Bucket(bucketAuditMeta).Put(keyAnchor, data)
}

// RunRetention prunes records older than retention at once and then every
// interval, until ctx ends.
func (l *Log) RunRetention(ctx context.Context, retention, interval time.Duration, sign SignFunc, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if n, err := l.Prune(ctx, time.Now().Add(-retention), sign); err != nil {
			log.Error("audit retention", "err", err)
		} else if n > 0 {
			log.Info("audit retention: records pruned", "count", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
