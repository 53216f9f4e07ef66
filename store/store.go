// Package store owns brokerd's state file: one bbolt database with a bucket
// per kind of record. It keeps the buckets of the key registry, the client
// registry and meta data; it stores opaque bytes under names and knows
// nothing of keys, TPMs or JSON shapes. The audit log lives in the same
// file, in buckets of its own that package audit owns (DB).
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
	"io/fs"
	"os"
	"path/filepath"
	"strings"
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
	db       *bolt.DB
	readOnly bool
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
		var pe *fs.PathError
		if errors.As(err, &pe) && pe.Path == path {
			err = pe.Err // the path once in the message
		}
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	s := &Store{db: db, readOnly: opts.ReadOnly}
	if opts.ReadOnly {
		return s, nil
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketKeys, bucketAliases, bucketClients} {
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
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	return s, nil
}

// Close closes the file. An audit log opened on it must be closed first.
func (s *Store) Close() error { return s.db.Close() }

// Path returns the file's path.
func (s *Store) Path() string { return s.db.Path() }

// ReadOnly reports whether the file was opened for reading only.
func (s *Store) ReadOnly() bool { return s.readOnly }

// DB is the open bbolt database, for the packages that keep buckets of
// their own in the state file (audit); they touch no other bucket.
func (s *Store) DB() *bolt.DB { return s.db }

// Check verifies the file's internal consistency (bbolt's page check).
func (s *Store) Check() error {
	return s.db.View(func(tx *bolt.Tx) error {
		var problems []string
		for err := range tx.Check() {
			problems = append(problems, err.Error())
		}
		if len(problems) > 0 {
			return fmt.Errorf("store: check %s: %s", s.Path(), strings.Join(problems, "; "))
		}
		return nil
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
