package policy

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/brokerd/brokerd/internal/watch"
)

// Engine holds the policy in force and reloads it from its file. It is
// safe for concurrent use: a reload swaps the whole policy at once, so a
// request sees either the old rules or the new ones.
type Engine struct {
	path string
	log  *slog.Logger
	cur  atomic.Pointer[Policy]
	seen atomic.Pointer[watch.Stamp] // of the file as last read
}

// NewEngine loads the policy at path.
func NewEngine(path string, log *slog.Logger) (*Engine, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &Engine{path: path, log: log}
	if err := e.Reload(); err != nil {
		return nil, err
	}
	return e, nil
}

// Path is the policy file.
func (e *Engine) Path() string { return e.path }

// Policy returns the rules in force.
func (e *Engine) Policy() *Policy { return e.cur.Load() }

// Decide applies the rules in force.
func (e *Engine) Decide(id Identity, req Request) Decision { return e.cur.Load().Decide(id, req) }

// Allowed reports whether the rules in force grant id any use of a key.
func (e *Engine) Allowed(id Identity, keyNames []string) bool {
	return e.cur.Load().Allowed(id, keyNames)
}

// Reload reads the file again. On error the rules in force stay.
func (e *Engine) Reload() error {
	st := watch.StampOf(e.path)
	p, err := Load(e.path)
	e.seen.Store(&st) // a broken file is not retried until it changes again
	if err != nil {
		return err
	}
	e.cur.Store(p)
	e.log.Info("policy loaded", "file", e.path, "rules", len(p.Rules))
	return nil
}

// Watch reloads the file whenever it changes, checking every interval,
// until ctx ends, and tells onReload (when set) the outcome. A file that
// does not load is logged and ignored.
func (e *Engine) Watch(ctx context.Context, interval time.Duration, onReload func(error)) {
	watch.Poll(ctx, watch.Options{Paths: []string{e.path}, Interval: interval, Seen: func() watch.Stamp { return *e.seen.Load() },
		Reload: e.Reload, OnReload: onReload, What: "policy file", Log: e.log})
}
