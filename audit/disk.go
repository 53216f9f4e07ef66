package audit

import (
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"
)

// ErrLowDisk is returned (wrapped in ErrAudit) while the state's file
// system has less free space than the log keeps in reserve.
var ErrLowDisk = errors.New("low disk space")

// diskCheckEvery bounds how often the free space is read: records come by
// the thousand per second, statfs is not free.
const diskCheckEvery = 250 * time.Millisecond

// diskGuard refuses records while free space is below min, reading it at
// most every diskCheckEvery.
type diskGuard struct {
	dir  string
	min  uint64
	free func(dir string) (uint64, error)

	mu      sync.Mutex
	checked time.Time
	err     error
}

// check returns ErrLowDisk while free space is short; a file system
// whose free space cannot be read is not refused (the commit will say).
func (g *diskGuard) check() error {
	if g.free == nil { // read-only
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if time.Since(g.checked) < diskCheckEvery {
		return g.err
	}
	g.checked, g.err = time.Now(), nil
	if free, err := g.free(g.dir); err == nil && free < g.min {
		g.err = fmt.Errorf("%w: %d MiB free on the state's file system, below the %d MiB kept in reserve (audit.min_free): free space there",
			ErrLowDisk, free>>20, g.min>>20)
	}
	return g.err
}

func statfsFree(dir string) (uint64, error) {
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err != nil {
		return 0, err
	}
	return fs.Bavail * uint64(fs.Bsize), nil
}
