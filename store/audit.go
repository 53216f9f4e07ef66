package store

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

var (
	bucketAudit       = []byte("audit")
	bucketCheckpoints = []byte("audit_checkpoints")
	metaAnchor        = []byte("audit_anchor")
)

// ErrAudit wraps failures to make an audit record durable: the operation
// it records must not complete.
var ErrAudit = errors.New("audit log cannot be written")

// AuditRecord is one entry of the audit log. It names who did what with
// which key and the SHA-256 of the data involved, never the data, a
// signature or key material. Seq and Prev are set when it is appended.
type AuditRecord struct {
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
	// Op is the operation: sign, makeRequest.start, makeRequest,
	// handshake, admin.key.create, admin.policy.reload, ...
	Op        string `json:"op"`
	RequestID string `json:"request_id,omitempty"`
	// Client is the subject of the client's certificate (or the local
	// user for admin changes); ClientSHA256 the certificate's SHA-256.
	Client       string `json:"client,omitempty"`
	ClientSHA256 string `json:"client_sha256,omitempty"`
	KeyID        string `json:"key_id,omitempty"`
	Alg          string `json:"alg,omitempty"`
	// DataSHA256 is the SHA-256 of the signed data or the request body.
	DataSHA256 string `json:"data_sha256,omitempty"`
	// Target is "METHOD scheme://host:port/path" of a bank call.
	Target     string  `json:"target,omitempty"`
	Status     int     `json:"status"`
	DurationMS float64 `json:"duration_ms"`
	Error      string  `json:"error,omitempty"`
	// Detail says more about admin changes (the rule, the key kind...).
	Detail string `json:"detail,omitempty"`
	// Prev is the SHA-256 (hex) of the previous record as stored.
	Prev string `json:"prev"`
}

// genesis is the Prev of the first record.
var genesis = hex.EncodeToString(make([]byte, 32))

// pending is a record waiting for the committer.
type pending struct {
	rec  AuditRecord
	seq  uint64
	done chan error
}

// auditLog appends records with group commit: one committer takes every
// record pending, writes them in one synced transaction, and only then
// lets their callers go on. A record that finds the log idle is committed
// at once by its own caller, without a hand-off.
type auditLog struct {
	// commitMu is held by whoever commits: the committer or a caller.
	commitMu sync.Mutex

	mu    sync.Mutex
	queue []*pending
	wake  chan struct{}
	quit  chan struct{}
	// committed is signalled after every successful commit (for the
	// checkpointer).
	committed chan struct{}
	stopped   chan struct{}

	// Committed state, guarded by mu.
	seq     uint64
	head    string
	lastErr error // of the last commit; nil once one succeeds
}

func be64(n uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, n)
	return b
}

// openAudit reads the chain's head and starts the committer.
func (s *Store) openAudit() error {
	a := &auditLog{wake: make(chan struct{}, 1), quit: make(chan struct{}), stopped: make(chan struct{}),
		committed: make(chan struct{}, 1), head: genesis}
	err := s.db.View(func(tx *bolt.Tx) error {
		if anc := tx.Bucket(bucketMeta).Get(metaAnchor); anc != nil {
			var an Anchor
			if err := json.Unmarshal(anc, &an); err != nil {
				return fmt.Errorf("audit anchor: %w", err)
			}
			a.seq, a.head = an.FirstSeq-1, an.Prev
		}
		k, v := tx.Bucket(bucketAudit).Cursor().Last()
		if k != nil {
			sum := sha256.Sum256(v)
			a.seq, a.head = binary.BigEndian.Uint64(k), hex.EncodeToString(sum[:])
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.audit = a
	go s.commitLoop()
	return nil
}

// Append makes rec durable: when it returns nil, the record (with its
// sequence number and link to its predecessor) is on disk, synced. On
// error (ErrAudit) the record is not in the log and the operation it
// records must not complete.
func (s *Store) Append(ctx context.Context, rec AuditRecord) (uint64, error) {
	if rec.Time.IsZero() {
		rec.Time = time.Now().UTC()
	}
	p := &pending{rec: rec, done: make(chan error, 1)}
	a := s.audit
	if a.commitMu.TryLock() {
		// Nobody commits: if nobody waits either, commit here.
		a.mu.Lock()
		if a.isClosed() {
			a.mu.Unlock()
			a.commitMu.Unlock()
			return 0, fmt.Errorf("%w: the state file is closed", ErrAudit)
		}
		idle := len(a.queue) == 0
		a.mu.Unlock()
		if idle {
			s.commit([]*pending{p})
			a.commitMu.Unlock()
			s.wakeCommitter() // for records that came meanwhile
			return p.seq, <-p.done
		}
		a.commitMu.Unlock()
	}
	a.mu.Lock()
	if a.isClosed() {
		a.mu.Unlock()
		return 0, fmt.Errorf("%w: the state file is closed", ErrAudit)
	}
	a.queue = append(a.queue, p)
	a.mu.Unlock()
	s.wakeCommitter()
	select {
	case err := <-p.done:
		return p.seq, err
	case <-ctx.Done():
		// The record may still be committed; the operation is abandoned.
		return 0, ctx.Err()
	}
}

// maxBatch bounds the records one commit takes.
const maxBatch = 4096

// isClosed reports whether the log was closed; the caller holds a.mu.
func (a *auditLog) isClosed() bool {
	select {
	case <-a.quit:
		return true
	default:
		return false
	}
}

func (s *Store) wakeCommitter() {
	select {
	case s.audit.wake <- struct{}{}:
	default:
	}
}

func (s *Store) commitLoop() {
	a := s.audit
	defer close(a.stopped)
	for {
		a.commitMu.Lock()
		a.mu.Lock()
		batch := a.queue
		if len(batch) > maxBatch {
			batch = batch[:maxBatch]
		}
		a.queue = a.queue[len(batch):]
		a.mu.Unlock()
		if len(batch) == 0 {
			a.commitMu.Unlock()
			select {
			case <-a.wake:
				continue
			case <-a.quit:
				return
			}
		}
		s.commit(batch)
		a.commitMu.Unlock()
	}
}

// commit writes batch in one synced transaction and tells each record's
// caller the outcome. The caller holds a.commitMu.
func (s *Store) commit(batch []*pending) {
	a := s.audit
	a.mu.Lock()
	seq, head := a.seq, a.head
	a.mu.Unlock()
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAudit)
		for _, p := range batch {
			seq++
			p.rec.Seq, p.rec.Prev = seq, head
			data, err := json.Marshal(p.rec)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(data)
			head = hex.EncodeToString(sum[:])
			if err := b.Put(be64(seq), data); err != nil {
				return err
			}
			p.seq = seq
		}
		return nil
	})
	a.mu.Lock()
	if err != nil {
		err = fmt.Errorf("%w: %w", ErrAudit, err)
	} else {
		// Advance only after the commit: a failed one leaves the chain
		// where the disk has it.
		a.seq, a.head = seq, head
	}
	a.lastErr = err
	a.mu.Unlock()
	if err == nil {
		select {
		case a.committed <- struct{}{}:
		default:
		}
	}
	for _, p := range batch {
		p.done <- err
	}
}

// closeAudit stops the committer after the records already queued.
func (s *Store) closeAudit() {
	a := s.audit
	if a == nil {
		return
	}
	a.mu.Lock()
	select {
	case <-a.quit:
		a.mu.Unlock()
		return
	default:
	}
	close(a.quit)
	a.mu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
	<-a.stopped
	// A caller's own commit in progress ends first; anything queued
	// after the last commit fails.
	a.commitMu.Lock()
	defer a.commitMu.Unlock()
	a.mu.Lock()
	for _, p := range a.queue {
		p.done <- fmt.Errorf("%w: the state file is closed", ErrAudit)
	}
	a.queue = nil
	a.mu.Unlock()
}

// Head returns the sequence number and hash of the last committed record.
func (s *Store) Head() (uint64, string) {
	s.audit.mu.Lock()
	defer s.audit.mu.Unlock()
	return s.audit.seq, s.audit.head
}

// Records calls fn for every record stored with a time in [since, until)
// (zero times: unbounded), in sequence order, with the bytes as stored.
func (s *Store) Records(since, until time.Time, fn func(rec AuditRecord, raw []byte) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketAudit).ForEach(func(_, v []byte) error {
			var r AuditRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("store: audit record: %w", err)
			}
			if (!since.IsZero() && r.Time.Before(since)) || (!until.IsZero() && !r.Time.Before(until)) {
				return nil
			}
			return fn(r, v)
		})
	})
}
