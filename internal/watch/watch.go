// Package watch notices when files change, by polling: the daemon's files
// are few and small, and polling works on every file system, bind mounts
// and editors that replace files included. Every file the daemon watches
// (policy, CRLs, bank CAs, TLS material) goes through it, so all of them
// count as changed on the same evidence: inode, size or modification time.
package watch

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Stamp identifies the versions of a set of files: each path's inode, size
// and modification time; a directory stands for the files in it (but
// hidden ones, such as the temporary file of an atomic replace). A file
// replaced by rename with the same size and time still changes its stamp.
type Stamp string

// StampOf returns the current stamp of paths (files or directories; a
// path that cannot be read counts as missing).
func StampOf(paths ...string) Stamp {
	var b strings.Builder
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			fmt.Fprintf(&b, "%s missing;", p)
			continue
		}
		if !fi.IsDir() {
			writeInfo(&b, p, fi)
			continue
		}
		entries, err := os.ReadDir(p)
		if err != nil {
			fmt.Fprintf(&b, "%s unreadable;", p)
			continue
		}
		fmt.Fprintf(&b, "%s dir;", p) // its own time changes with every temporary file: the entries tell
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".") {
				continue // a file being written (files.Replace's temporary), or hidden
			}
			if efi, err := e.Info(); err == nil {
				writeInfo(&b, filepath.Join(p, e.Name()), efi)
			}
		}
	}
	return Stamp(b.String())
}

func writeInfo(b *strings.Builder, path string, fi os.FileInfo) {
	var ino uint64
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		ino = st.Ino
	}
	fmt.Fprintf(b, "%s %d %d %d;", path, ino, fi.Size(), fi.ModTime().UnixNano())
}

// Options says what Poll watches and what it does on a change.
type Options struct {
	// Paths are the files or directories watched.
	Paths []string
	// Interval between checks; default a second.
	Interval time.Duration
	// Seen returns the stamp of what is in force, as whoever loaded it
	// took it before reading (so a reload by other means, a SIGHUP or an
	// admin command, is not repeated). Nil: Poll compares with what it
	// saw at its previous check.
	Seen func() Stamp
	// Reload loads the files again; on error what is in force stays.
	Reload func() error
	// OnReload, when set, is told the outcome of every reload Poll makes.
	OnReload func(error)
	// What names the files in log messages ("policy file").
	What string
	Log  *slog.Logger
}

// Poll checks the paths every interval until ctx ends and reloads them
// when they changed; a failed reload is logged and what was in force
// stays (that is Reload's business).
func Poll(ctx context.Context, o Options) {
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	last := StampOf(o.Paths...)
	t := time.NewTicker(o.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now, seen := StampOf(o.Paths...), last
		if o.Seen != nil {
			seen = o.Seen()
		}
		last = now
		if now == seen {
			continue
		}
		err := o.Reload()
		if err != nil {
			o.Log.Error(o.What+" changed but does not load; keeping what is in force", "err", err)
		}
		if o.OnReload != nil {
			o.OnReload(err)
		}
	}
}
