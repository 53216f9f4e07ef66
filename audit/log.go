package audit

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/brokerd/brokerd/store"
)

// pending is a record waiting for the committer.
type pending struct {
	rec  Record
	seq  uint64
	done chan error
}

// Log is the audit log of an open state file. It appends records with
// group commit: one committer takes every record pending, writes them in
// one synced transaction, and only then lets their callers go on. A record
// that finds the log idle is committed at once by its own caller, without
// a hand-off.
type Log struct {
	db       *bolt.DB
	readOnly bool

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

	disk     diskGuard
	onCommit func(records int, d time.Duration)
}

// DefaultMinFree is the free space below which the log refuses records
// (and so the operations they record) unless Options say otherwise: well
// before bbolt could no longer commit, and without giving it space it
// would never give back.
const DefaultMinFree = 64 << 20

// Options configure OpenWith; zero fields take the defaults.
type Options struct {
	// MinFree is the free space, in bytes, that the state's file system
	// must keep: below it Append fails with ErrLowDisk (wrapped in
	// ErrAudit) until space is freed. Default DefaultMinFree.
	MinFree uint64
	// FreeSpace reports the free bytes of the file system holding dir;
	// default statfs(2). Tests give their own.
	FreeSpace func(dir string) (uint64, error)
	// OnCommit, when set, hears of every commit that succeeded: how many
	// records it made durable and how long the synced transaction took.
	OnCommit func(records int, d time.Duration)
}

// Open opens the audit log of st with the default options.
func Open(st *store.Store) (*Log, error) { return OpenWith(st, Options{}) }

// OpenWith opens the audit log of st: it creates the log's buckets, reads
// the chain's head and, unless st is read-only, starts the committer.
func OpenWith(st *store.Store, opts Options) (*Log, error) {
	if opts.MinFree == 0 {
		opts.MinFree = DefaultMinFree
	}
	if opts.FreeSpace == nil {
		opts.FreeSpace = statfsFree
	}
	l := &Log{db: st.DB(), readOnly: st.ReadOnly(), wake: make(chan struct{}, 1), quit: make(chan struct{}),
		stopped: make(chan struct{}), committed: make(chan struct{}, 1), head: genesis,
		disk: diskGuard{dir: filepath.Dir(st.Path()), min: opts.MinFree, free: opts.FreeSpace}, onCommit: opts.OnCommit}
	if !l.readOnly {
		if err := l.db.Update(createBuckets); err != nil {
			return nil, fmt.Errorf("audit: open %s: %w", st.Path(), err)
		}
	}
	err := l.db.View(func(tx *bolt.Tx) error {
		an, err := readAnchor(tx)
		if err != nil {
			return err
		}
		if an != nil {
			l.seq, l.head = an.FirstSeq-1, an.Prev
		}
		if b := tx.Bucket(bucketAudit); b != nil {
			if k, v := b.Cursor().Last(); k != nil {
				sum := sha256.Sum256(v)
				l.seq, l.head = binary.BigEndian.Uint64(k), hex.EncodeToString(sum[:])
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("audit: open %s: %w", st.Path(), err)
	}
	if l.readOnly {
		close(l.quit)
		close(l.stopped)
		return l, nil
	}
	go l.commitLoop()
	return l, nil
}

// createBuckets makes the log's buckets and moves the anchor of pruned
// records out of store's meta bucket, where older state files kept it.
func createBuckets(tx *bolt.Tx) error {
	for _, b := range [][]byte{bucketAudit, bucketCheckpoints, bucketAuditMeta} {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return err
		}
	}
	meta := tx.Bucket(legacyMeta)
	if meta == nil {
		return nil
	}
	if v := meta.Get(legacyKey); v != nil {
		if err := tx.Bucket(bucketAuditMeta).Put(keyAnchor, append([]byte(nil), v...)); err != nil {
			return err
		}
		return meta.Delete(legacyKey)
	}
	return nil
}

// readAnchor returns the anchor of pruned records, nil when none.
func readAnchor(tx *bolt.Tx) (*Anchor, error) {
	var raw []byte
	if b := tx.Bucket(bucketAuditMeta); b != nil {
		raw = b.Get(keyAnchor)
	} else if b := tx.Bucket(legacyMeta); b != nil { // an older file, read-only
		raw = b.Get(legacyKey)
	}
	if raw == nil {
		return nil, nil
	}
	var a Anchor
	if err := json.Unmarshal(raw, &a); err != nil {
		return nil, fmt.Errorf("the anchor of pruned records: %w", err)
	}
	return &a, nil
}

// Append makes rec durable: when it returns nil, the record (with its
// sequence number and link to its predecessor) is on disk, synced. On
// error (ErrAudit) the record is not in the log and the operation it
// records must not complete.
func (l *Log) Append(ctx context.Context, rec Record) (uint64, error) {
	if rec.Time.IsZero() {
		rec.Time = time.Now().UTC()
	}
	if err := l.disk.check(); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrAudit, err)
	}
	p := &pending{rec: rec.bound(), done: make(chan error, 1)}
	if l.commitMu.TryLock() {
		// Nobody commits: if nobody waits either, commit here.
		l.mu.Lock()
		if l.isClosed() {
			l.mu.Unlock()
			l.commitMu.Unlock()
			return 0, l.closedErr()
		}
		idle := len(l.queue) == 0
		l.mu.Unlock()
		if idle {
			l.commit([]*pending{p})
			l.commitMu.Unlock()
			l.wakeCommitter() // for records that came meanwhile
			return p.seq, <-p.done
		}
		l.commitMu.Unlock()
	}
	l.mu.Lock()
	if l.isClosed() {
		l.mu.Unlock()
		return 0, l.closedErr()
	}
	l.queue = append(l.queue, p)
	l.mu.Unlock()
	l.wakeCommitter()
	select {
	case err := <-p.done:
		return p.seq, err
	case <-ctx.Done():
		// The record may still be committed; the operation is abandoned.
		return 0, ctx.Err()
	}
}

func (l *Log) closedErr() error {
	if l.readOnly {
		return fmt.Errorf("%w: the state file is open read-only", ErrAudit)
	}
	return fmt.Errorf("%w: the audit log is closed", ErrAudit)
}

// maxBatch bounds the records one commit takes.
const maxBatch = 4096

// isClosed reports whether the log was closed; the caller holds l.mu.
func (l *Log) isClosed() bool {
	select {
	case <-l.quit:
		return true
	default:
		return false
	}
}

func (l *Log) wakeCommitter() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

func (l *Log) commitLoop() {
	defer close(l.stopped)
	for {
		l.commitMu.Lock()
		l.mu.Lock()
		batch := l.queue
		if len(batch) > maxBatch {
			batch = batch[:maxBatch]
		}
		l.queue = l.queue[len(batch):]
		l.mu.Unlock()
		if len(batch) == 0 {
			l.commitMu.Unlock()
			select {
			case <-l.wake:
				continue
			case <-l.quit:
				return
			}
		}
		l.commit(batch)
		l.commitMu.Unlock()
	}
}

// commit writes batch in one synced transaction and tells each record's
// caller the outcome. The caller holds l.commitMu.
func (l *Log) commit(batch []*pending) {
	l.mu.Lock()
	seq, head := l.seq, l.head
	l.mu.Unlock()
	start := time.Now()
	err := l.db.Update(func(tx *bolt.Tx) error {
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
	l.mu.Lock()
	if err != nil {
		err = fmt.Errorf("%w: %w", ErrAudit, err)
	} else {
		// Advance only after the commit: a failed one leaves the chain
		// where the disk has it.
		l.seq, l.head = seq, head
	}
	l.lastErr = err
	l.mu.Unlock()
	if err == nil {
		if l.onCommit != nil {
			l.onCommit(len(batch), time.Since(start))
		}
		select {
		case l.committed <- struct{}{}:
		default:
		}
	}
	for _, p := range batch {
		p.done <- err
	}
}

// Close stops the committer after the records already queued; records
// appended later fail with ErrAudit.
func (l *Log) Close() {
	l.mu.Lock()
	if l.isClosed() {
		l.mu.Unlock()
		return
	}
	close(l.quit)
	l.mu.Unlock()
	l.wakeCommitter()
	<-l.stopped
	// A caller's own commit in progress ends first; anything queued
	// after the last commit fails.
	l.commitMu.Lock()
	defer l.commitMu.Unlock()
	l.mu.Lock()
	for _, p := range l.queue {
		p.done <- l.closedErr()
	}
	l.queue = nil
	l.mu.Unlock()
}

// Healthy reports whether the log takes records: the last commit
// succeeded (or none was made) and the disk has room.
func (l *Log) Healthy() error {
	l.mu.Lock()
	err := l.lastErr
	l.mu.Unlock()
	if err != nil {
		return fmt.Errorf("audit: the last commit failed: %w", err)
	}
	return l.disk.check()
}

// Head returns the sequence number and hash of the last committed record.
func (l *Log) Head() (uint64, string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seq, l.head
}

// Records calls fn for every record stored with a time in [since, until)
// (zero times: unbounded), in sequence order, with the bytes as stored.
func (l *Log) Records(since, until time.Time, fn func(rec Record, raw []byte) error) error {
	return l.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAudit)
		if b == nil {
			return nil
		}
		return b.ForEach(func(_, v []byte) error {
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("audit: record: %w", err)
			}
			if (!since.IsZero() && r.Time.Before(since)) || (!until.IsZero() && !r.Time.Before(until)) {
				return nil
			}
			return fn(r, v)
		})
	})
}
