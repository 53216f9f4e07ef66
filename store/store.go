// Package store owns brokerd's state file: one bbolt database with a bucket
// per kind of record. It stores opaque bytes under names and knows nothing of
// keys, TPMs or JSON shapes.
//
// # Concurrency
//
// A Store is safe for concurrent use. bbolt allows one process per file: a
// second brokerd that opens the same file waits at most Options.Timeout and
// fails with ErrLocked.
package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

var (
	// ErrNotFound is returned when no record has the requested name.
	ErrNotFound = errors.New("not found")
	// ErrExists is returned when a name is already taken.
	ErrExists = errors.New("already exists")
	// ErrLocked is returned when another process holds the state file.
	ErrLocked = errors.New("state file is in use by another brokerd process")
)

// FileName is the state file's name in the state directory.
const FileName = "brokerd.db"

// schemaVersion is the layout of the buckets below.
const schemaVersion = "1"

var (
	bucketMeta    = []byte("meta")
	bucketKeys    = []byte("keys")
	bucketAliases = []byte("key_aliases")
)

// Options configures Open.
type Options struct {
	// Timeout bounds the wait for the file lock. Default 1s.
	Timeout time.Duration
	// ReadOnly opens the file with a shared lock for reading.
	ReadOnly bool
}

// Store is an open state file.
type Store struct {
	db    *bolt.DB
	audit *auditLog // nil when read-only
}

// Open opens (creating if needed, with mode 0600) the state file at path.
func Open(path string, opts Options) (*Store, error) {
	if opts.Timeout == 0 {
		opts.Timeout = time.Second
	}
	if !opts.ReadOnly {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("store: open %s: %w", path, err)
		}
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.Timeout, ReadOnly: opts.ReadOnly})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("store: open %s: %w", path, ErrLocked)
		}
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	s := &Store{db: db}
	if opts.ReadOnly {
		return s, nil
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketKeys, bucketAliases, bucketAudit, bucketCheckpoints, bucketClients} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		switch v := meta.Get([]byte("schema")); {
		case v == nil:
			return meta.Put([]byte("schema"), []byte(schemaVersion))
		case string(v) != schemaVersion:
			return fmt.Errorf("schema version %s, this brokerd reads %s", v, schemaVersion)
		}
		return nil
	})
	if err == nil {
		err = s.openAudit()
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	return s, nil
}

// Close waits for audit records already appended, then closes the file.
func (s *Store) Close() error {
	if s.audit != nil {
		s.closeAudit()
	}
	return s.db.Close()
}

// Path returns the file's path.
func (s *Store) Path() string { return s.db.Path() }

// Check verifies the file's internal consistency (bbolt's page check).
func (s *Store) Check() error {
	return s.db.View(func(tx *bolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	})
}

// Meta returns the value stored under key in the meta bucket.
func (s *Store) Meta(key string) ([]byte, error) {
	var out []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketMeta).Get([]byte(key))
		if v == nil {
			return fmt.Errorf("store: meta %q: %w", key, ErrNotFound)
		}
		out = append([]byte(nil), v...)
		return nil
	})
	return out, err
}

// SetMeta stores value under key in the meta bucket.
func (s *Store) SetMeta(key string, value []byte) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put([]byte(key), value)
	})
	if err != nil {
		return fmt.Errorf("store: set meta %q: %w", key, err)
	}
	return nil
}

// minFree is the free space below which the state counts as unwritable:
// the audit log must be able to grow.
const minFree = 1 << 20

// Writable reports whether the state can take audit records: the file
// system has room, no audit commit failed since the last one that
// succeeded, and a small synced write goes through.
func (s *Store) Writable() error {
	var fs syscall.Statfs_t
	if err := syscall.Statfs(filepath.Dir(s.Path()), &fs); err == nil {
		if free := fs.Bavail * uint64(fs.Bsize); free < minFree {
			return fmt.Errorf("store: only %d bytes free on the state's file system", free)
		}
	}
	if s.audit != nil {
		s.audit.mu.Lock()
		err := s.audit.lastErr
		s.audit.mu.Unlock()
		if err != nil {
			return fmt.Errorf("store: the last audit commit failed: %w", err)
		}
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put([]byte("probe"), []byte(time.Now().UTC().Format(time.RFC3339Nano)))
	})
	if err != nil {
		return fmt.Errorf("store: write probe: %w", err)
	}
	return nil
}
