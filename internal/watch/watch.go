// Package watch reloads files that change, by polling: the daemon's
// configuration files are few and small, and polling works on every file
// system, bind mounts and editors that replace files included.
package watch

import (
	"context"
	"log/slog"
	"time"
)

// Poll checks changed every interval until ctx ends; when it reports a
// change, Poll calls reload, logs a failure as failMsg (what was in force
// stays, reload's business), and tells onReload (when set) the outcome.
func Poll(ctx context.Context, interval time.Duration, changed func() bool, reload func() error, onReload func(error), log *slog.Logger, failMsg string) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if !changed() {
				continue
			}
			err := reload()
			if err != nil {
				log.Error(failMsg, "err", err)
			}
			if onReload != nil {
				onReload(err)
			}
		}
	}
}
