package audit

import (
	"errors"
	"fmt"
	"time"

	"github.com/brokerd/brokerd/store"
)

// OpenFile opens the audit log of the state file at path read-only, for
// verifying or exporting it, waiting at most timeout for a process that
// holds the file. It returns the log, the store (for the keys recorded in
// it) and the function that closes both. A file another process holds is
// not waited for longer: the error says what to do instead.
func OpenFile(path string, timeout time.Duration) (*Log, *store.Store, func(), error) {
	st, err := store.Open(path, store.Options{ReadOnly: true, Timeout: timeout})
	if errors.Is(err, store.ErrLocked) {
		return nil, nil, nil, fmt.Errorf("%s is held by another process (a daemon without its admin socket?): stop it, copy the file, and give the copy with --db", path)
	}
	if err != nil {
		return nil, nil, nil, err
	}
	l, err := Open(st)
	if err != nil {
		st.Close()
		return nil, nil, nil, err
	}
	return l, st, func() { l.Close(); st.Close() }, nil
}

// ParseTime reads a time bound as the command line gives it: RFC 3339, or
// a date (midnight UTC); "" is the zero time (no bound).
func ParseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("time %q: want 2026-03-01 or 2026-03-01T12:00:00Z", s)
	}
	return t, nil
}
