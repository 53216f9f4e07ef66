package tpm

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Class is the priority class of a TPM operation. While the TPM is busy,
// operations wait in one queue per class; each time it frees, the device
// starts the next operation by class, in priority order (ClassAPI, then
// ClassHandshake, then ClassHousekeeping) within per-class shares, so that
// no class starves (see ClassConfig). Each class has its own bound on
// waiting operations, so a flood of one class never takes another's room.
type Class int

const (
	// ClassAPI is for operations of authenticated clients: /sign, the
	// QWAC's signatures in makeRequest's handshakes with banks, and admin
	// commands. It is the class of an operation whose context carries none.
	ClassAPI Class = iota
	// ClassHandshake is for the API server's own TLS key during inbound
	// handshakes, which a peer can ask for before it has proven anything.
	ClassHandshake
	// ClassHousekeeping is for the daemon's own upkeep: audit checkpoints,
	// CRL and certificate renewal, health and watchdog self-checks, config
	// check.
	ClassHousekeeping
	// NumClasses is the number of classes: arrays indexed by Class have
	// this length, and `for c := range NumClasses` visits every class.
	NumClasses
)

// String returns the class's name as metrics label it: "api",
// "handshake" or "housekeeping".
func (c Class) String() string {
	switch c {
	case ClassAPI:
		return "api"
	case ClassHandshake:
		return "handshake"
	case ClassHousekeeping:
		return "housekeeping"
	}
	return fmt.Sprintf("class(%d)", int(c))
}

func (c Class) valid() bool { return c >= 0 && c < NumClasses }

type classKey struct{}

// WithClass returns a copy of ctx that carries class c: TPM operations
// given that context wait in c's queue. An invalid class counts as none.
func WithClass(ctx context.Context, c Class) context.Context {
	return context.WithValue(ctx, classKey{}, c)
}

// ClassOf returns the class ctx carries, or ClassAPI when it carries none
// (or an invalid one). ClassAPI is the default so that the operations of
// clients, the bulk of the traffic, need no marking, and code that forgets
// to mark its context competes as the device's callers did before classes
// existed; the callers that must step aside, server handshakes and
// housekeeping, say so.
func ClassOf(ctx context.Context) Class {
	if c, ok := classIn(ctx); ok {
		return c
	}
	return ClassAPI
}

func classIn(ctx context.Context) (Class, bool) {
	c, ok := ctx.Value(classKey{}).(Class)
	return c, ok && c.valid()
}

// ClassConfig is one class's share of the TPM and room in the queue.
type ClassConfig struct {
	// Weight is how many operations of the class start per round while
	// classes compete for the TPM: a class that always has operations
	// waiting gets at least Weight / (sum of the competing classes'
	// weights) of the TPM's turns, and waits at most the other classes'
	// weights in turns (plus the operation running) whenever it has
	// spent its own. Zero means the default: 8 for ClassAPI, 2 for
	// ClassHandshake, 1 for ClassHousekeeping.
	Weight int
	// Depth bounds the operations of the class waiting for the TPM: one
	// more fails at once with ErrBusy. Zero means the default, a share of
	// QueueDepth: all of it for ClassAPI, a quarter for ClassHandshake, an
	// eighth for ClassHousekeeping, at least 1.
	Depth int
}

// defaultWeights are the classes' default shares, see ClassConfig.
var defaultWeights = [NumClasses]int{ClassAPI: 8, ClassHandshake: 2, ClassHousekeeping: 1}

// defaultDepth is class c's default bound for a given QueueDepth.
func defaultDepth(c Class, queueDepth int) int {
	n := queueDepth
	switch c {
	case ClassHandshake:
		n = queueDepth / 4
	case ClassHousekeeping:
		n = queueDepth / 8
	}
	return max(n, 1)
}

// Depth returns the bound on waiting operations of class c that a device
// opened with this configuration applies: c's ClassConfig.Depth, or its
// default share of QueueDepth. It returns 0 for an invalid class.
func (c Config) Depth(cl Class) int {
	if !cl.valid() {
		return 0
	}
	return c.withDefaults().Classes[cl].Depth
}

// queue is the device's token and the operations waiting for it: one
// FIFO per class, served by weighted round robin in priority order.
type queue struct {
	mu     sync.Mutex
	busy   bool          // someone holds the token
	closed bool          // Close began; nobody new may wait
	closer chan struct{} // Close waits on it for the token

	head, tail [NumClasses]*waiter
	total      int             // waiters in all classes
	credit     [NumClasses]int // turns left to each class in this round
	weight     [NumClasses]int // Config.Classes[c].Weight, at least 1
	depth      [NumClasses]int64
	waiting    [NumClasses]atomic.Int64 // written under mu, read anywhere
	wait       time.Duration            // Config.QueueWait: the wait budget
	opNanos    atomic.Int64             // average hold time of an operation (see observe)

	// The ErrBusy errors, made once: refusing costs no allocation.
	full     [NumClasses]error
	waited   error
	outlasts error
}

// waiter is one operation waiting for the token. Waiters are pooled: the
// slow path allocates nothing once warm.
type waiter struct {
	ready      chan struct{} // capacity 1: receives the token
	timer      *time.Timer
	class      Class
	granted    bool // the token is this waiter's (under queue.mu)
	prev, next *waiter
}

var waiters = sync.Pool{New: func() any { return &waiter{ready: make(chan struct{}, 1)} }}

func (q *queue) init(cfg Config) {
	for c := range NumClasses {
		q.weight[c] = cfg.Classes[c].Weight
		q.depth[c] = int64(cfg.Classes[c].Depth)
		q.full[c] = fmt.Errorf("%w: %d %s operations already queued", ErrBusy, q.depth[c], c)
	}
	q.credit = q.weight
	q.wait = cfg.QueueWait
	q.waited = fmt.Errorf("%w: waited %v for the TPM", ErrBusy, cfg.QueueWait)
	q.outlasts = fmt.Errorf("%w: the operations ahead would outlast the %v wait for the TPM", ErrBusy, cfg.QueueWait)
}

// The wait budget (Config.QueueWait) bounds an operation's whole time at
// the TPM, its wait and its own run, not only the wait: on a slow chip a
// signature takes a good part of a second, and an operation started just
// before its wait ran out would answer that much later. So a waiter gives
// up after the budget less two average operations (its own, and one of
// slack for the variance of the others), and an operation that would
// find more operations ahead of it than fit in that time is refused at
// once, rather than after waiting for nothing.

// expected is the average time an operation holds the TPM (0 before the
// first has run).
func (q *queue) expected() time.Duration { return time.Duration(q.opNanos.Load()) }

// observe adds an operation's hold time to the average, with a weight of
// 1/8; a sample counts at most a quarter of the wait budget (far above a
// signature on any chip), so one slow key generation does not refuse work
// for long.
func (q *queue) observe(took time.Duration) {
	took = min(took, q.wait/4)
	for {
		old := q.opNanos.Load()
		avg := int64(took)
		if old != 0 {
			avg = old + (avg-old)/8
		}
		if q.opNanos.CompareAndSwap(old, max(avg, 1)) {
			return
		}
	}
}

// patience is how long an operation may wait for its turn: the budget
// less two average operations, but at least a quarter of the budget.
func (q *queue) patience() time.Duration {
	return max(q.wait-2*q.expected(), q.wait/4)
}

// wouldOutlast reports whether an operation of class c, arriving now, would
// find more operations ahead of it (those waiting in c and in the classes
// before it, and the one running) than fit in its patience. It takes no
// lock.
func (q *queue) wouldOutlast(c Class) bool {
	exp := q.expected()
	if exp == 0 || !c.valid() {
		return false
	}
	ahead := int64(1) // the operation running
	for k := range c + 1 {
		ahead += q.waiting[k].Load()
	}
	return time.Duration(ahead)*exp > q.patience()
}

// push appends w to its class's queue. Under mu.
func (q *queue) push(w *waiter) {
	c := w.class
	w.prev, w.next = q.tail[c], nil
	if q.tail[c] != nil {
		q.tail[c].next = w
	} else {
		q.head[c] = w
	}
	q.tail[c] = w
	q.total++
	q.waiting[c].Add(1)
}

// remove takes w out of its class's queue. Under mu.
func (q *queue) remove(w *waiter) {
	c := w.class
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		q.head[c] = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		q.tail[c] = w.prev
	}
	w.prev, w.next = nil, nil
	q.total--
	q.waiting[c].Add(-1)
}

// pick removes and returns the waiter that gets the token next, nil if
// none waits: the first waiter of the first class, in priority order, that
// waits and has turns left in this round; when every waiting class has
// spent its turns, a new round begins. Under mu.
func (q *queue) pick() *waiter {
	if q.total == 0 {
		return nil
	}
	for range 2 {
		for c := range NumClasses {
			if q.head[c] != nil && q.credit[c] > 0 {
				q.credit[c]--
				w := q.head[c]
				q.remove(w)
				return w
			}
		}
		q.credit = q.weight
	}
	panic("tpm: queue holds waiters but no class has turns") // weights are at least 1
}

// acquire takes the device's token for an operation of class c (the
// context's class wins), waiting its turn if the device is busy. It
// returns with the token held, or with ErrBusy, ErrClosed or ctx's error
// and the token not held.
func (d *Device) acquire(ctx context.Context, c Class) error {
	if cc, ok := classIn(ctx); ok {
		c = cc
	}
	q := &d.q
	q.mu.Lock()
	if !q.busy && !q.closed { // the TPM is free: no queueing, no hand-off
		q.busy = true
		q.mu.Unlock()
		if d.cfg.Observer != nil {
			d.cfg.Observer.Waited(c, 0)
		}
		return nil
	}
	if q.closed {
		q.mu.Unlock()
		return ErrClosed
	}
	if d.cfg.Observer != nil {
		defer func(start time.Time) { d.cfg.Observer.Waited(c, time.Since(start)) }(time.Now())
	}
	if q.waiting[c].Load() >= q.depth[c] {
		q.mu.Unlock()
		return q.full[c]
	}
	if q.wouldOutlast(c) {
		q.mu.Unlock()
		return q.outlasts
	}
	w := waiters.Get().(*waiter)
	w.class = c
	q.push(w)
	q.mu.Unlock()

	if w.timer == nil {
		w.timer = time.NewTimer(q.patience())
	} else {
		w.timer.Reset(q.patience())
	}
	var err error
	select {
	case <-w.ready:
		w.timer.Stop()
		w.granted = false // pick removed w; nobody else refers to it
		waiters.Put(w)
		return nil
	case <-w.timer.C:
		err = q.waited
	case <-ctx.Done():
		w.timer.Stop()
		err = ctx.Err()
	case <-d.quit:
		w.timer.Stop()
		err = ErrClosed
	}
	q.mu.Lock()
	granted := w.granted
	if granted { // the token came as we gave up: pass it on
		<-w.ready
		w.granted = false
	} else {
		q.remove(w)
	}
	q.mu.Unlock()
	waiters.Put(w)
	if granted {
		d.giveBack()
	}
	return err
}

// giveBack passes the token to the next waiter, or to Close, or frees it.
func (d *Device) giveBack() {
	q := &d.q
	q.mu.Lock()
	if q.closer != nil { // Close keeps the token for good
		close(q.closer)
		q.closer = nil
	} else if w := q.pick(); w != nil {
		w.granted = true
		w.ready <- struct{}{}
	} else {
		q.busy = false
	}
	q.mu.Unlock()
}

// Waiting returns how many operations of each class wait for the TPM (not
// counting the one it runs), indexed by Class: for metrics. It takes no
// lock; the counts may be a moment old.
func (d *Device) Waiting() [NumClasses]int {
	var n [NumClasses]int
	for c := range NumClasses {
		n[c] = int(d.q.waiting[c].Load())
	}
	return n
}

// Saturated reports whether an operation of class c would fail with
// ErrBusy at once, unless the TPM frees first: its class's queue is full,
// or the operations ahead of it would outlast the wait budget. It is cheap
// (a few atomic loads, no lock): callers use it to refuse work early,
// before parsing a request. An invalid class is never saturated.
func (d *Device) Saturated(c Class) bool {
	return c.valid() && (d.q.waiting[c].Load() >= d.q.depth[c] || d.q.wouldOutlast(c))
}
