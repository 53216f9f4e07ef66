package tpm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// Config configures a Device. Zero fields take the defaults shown.
type Config struct {
	// Address of the TPM, see ParseAddress. Default DefaultAddress.
	Address string
	// CommandTimeout bounds every TPM command except key generation.
	// Default 10s.
	CommandTimeout time.Duration
	// KeygenTimeout bounds key and primary-key generation, which takes
	// seconds to minutes on hardware TPMs. Default 3m.
	KeygenTimeout time.Duration
	// QueueDepth bounds the operations waiting for the TPM. Default 128.
	QueueDepth int
	// QueueWait bounds how long an operation waits for its turn before it
	// fails with ErrBusy. Default 5s.
	QueueWait time.Duration
	// SimulatorSeed fixes the simulator's seeds (simulator builds only);
	// zero means random.
	SimulatorSeed int64
}

func (c Config) withDefaults() Config {
	if c.Address == "" {
		c.Address = DefaultAddress
	}
	if c.CommandTimeout == 0 {
		c.CommandTimeout = 10 * time.Second
	}
	if c.KeygenTimeout == 0 {
		c.KeygenTimeout = 3 * time.Minute
	}
	if c.QueueDepth == 0 {
		c.QueueDepth = 128
	}
	if c.QueueWait == 0 {
		c.QueueWait = 5 * time.Second
	}
	return c
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	c = c.withDefaults()
	if _, err := ParseAddress(c.Address); err != nil {
		return err
	}
	switch {
	case c.CommandTimeout < 0, c.KeygenTimeout < 0, c.QueueWait < 0:
		return errors.New("tpm: timeouts must not be negative")
	case c.QueueDepth < 0:
		return errors.New("tpm: queue depth must not be negative")
	}
	return nil
}

// Device is the one owner of a TPM. All commands run on a single goroutine
// fed by a bounded queue; a Device is safe for concurrent use.
type Device struct {
	addr Address
	cfg  Config
	log  *slog.Logger
	tr   transport.TPMCloser

	jobs      chan *job
	quit      chan struct{}
	stopped   chan struct{}
	closeOnce sync.Once

	// Set in Open, read-only afterwards.
	srkPub  tpm2.TPMTPublic
	srkName tpm2.TPM2BName
	support map[Algorithm]bool

	// Owned by the owner goroutine (and by Open before it starts).
	objs  objectCache
	dirty bool
}

// Open connects to the TPM, flushes transient objects and sessions left
// behind by earlier clients, creates the storage root key and probes which
// key types the TPM can hold.
func Open(cfg Config, log *slog.Logger) (*Device, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	addr, _ := ParseAddress(cfg.Address)
	tr, err := openTransport(addr, timeouts{command: cfg.CommandTimeout, keygen: cfg.KeygenTimeout}, cfg.SimulatorSeed)
	if err != nil {
		return nil, err
	}
	d := &Device{
		addr:    addr,
		cfg:     cfg,
		log:     log,
		tr:      tr,
		jobs:    make(chan *job, cfg.QueueDepth),
		quit:    make(chan struct{}),
		stopped: make(chan struct{}),
		objs:    objectCache{m: map[string]*object{}},
	}
	if err := d.setup(); err != nil {
		tr.Close()
		return nil, fmt.Errorf("tpm: open %s: %w", addr, err)
	}
	go d.loop()
	return d, nil
}

// setup runs before the owner goroutine starts.
func (d *Device) setup() error {
	if err := d.reset(); err != nil {
		return err
	}
	srk, err := d.srk()
	if err != nil {
		return err
	}
	d.srkPub, d.srkName = *srk.pub, srk.name
	d.support = map[Algorithm]bool{}
	for _, alg := range Algorithms {
		_, err := tpm2.TestParms{Parameters: testParms(alg)}.Execute(d.tr)
		if err != nil && errors.Is(err, ErrUnavailable) {
			return err
		}
		d.support[alg] = err == nil
	}
	return nil
}

// Address returns the address the device was opened with.
func (d *Device) Address() Address { return d.addr }

// SRKName returns the Name of the storage root key: it identifies the TPM
// (and its owner seed), so state made on one TPM can be recognised on another.
func (d *Device) SRKName() []byte { return append([]byte(nil), d.srkName.Buffer...) }

// Supports reports whether the TPM can hold keys of the given algorithm.
func (d *Device) Supports(alg Algorithm) bool { return d.support[alg] }

// Close stops the owner goroutine after the command in flight, fails queued
// operations with ErrClosed, flushes loaded objects and closes the transport.
func (d *Device) Close() error {
	var err error
	d.closeOnce.Do(func() {
		close(d.quit)
		<-d.stopped
		if !d.dirty {
			d.objs.each(func(o *object) { d.flushHandle(o.handle) })
		}
		err = d.tr.Close()
	})
	return err
}

// Ping checks that the TPM answers a trivial command through the queue.
func (d *Device) Ping(ctx context.Context) error {
	return d.do(ctx, func() error {
		_, err := tpm2.GetRandom{BytesRequested: 8}.Execute(d.tr)
		if err != nil {
			return fmt.Errorf("tpm: get random: %w", err)
		}
		return nil
	})
}

// TransientHandles lists the transient object handles loaded in the TPM.
// Tests use it to check that nothing leaks.
func (d *Device) TransientHandles(ctx context.Context) ([]uint32, error) {
	var out []uint32
	err := d.do(ctx, func() error {
		hs, err := d.handles(tpm2.TPMHTTransient)
		for _, h := range hs {
			out = append(out, uint32(h))
		}
		return err
	})
	return out, err
}

// CachedObjects returns how many transient objects the device keeps loaded.
func (d *Device) CachedObjects(ctx context.Context) (int, error) {
	var n int
	err := d.do(ctx, func() error { n = len(d.objs.m); return nil })
	return n, err
}

const (
	jobQueued int32 = iota
	jobStarted
	jobCancelled
)

type job struct {
	fn    func() error
	state atomic.Int32
	done  chan error
}

// do runs fn on the owner goroutine. It fails with ErrBusy when the queue is
// full or fn did not start within QueueWait, and with ctx's error when ctx
// ends first; once fn has started, do waits for it (every TPM command has
// its own deadline).
func (d *Device) do(ctx context.Context, fn func() error) error {
	select {
	case <-d.quit:
		return ErrClosed
	default:
	}
	j := &job{fn: fn, done: make(chan error, 1)}
	select {
	case d.jobs <- j:
	default:
		return fmt.Errorf("%w: %d operations already queued", ErrBusy, cap(d.jobs))
	}
	timer := time.NewTimer(d.cfg.QueueWait)
	defer timer.Stop()
	var why error
	select {
	case err := <-j.done:
		return err
	case <-timer.C:
		why = fmt.Errorf("%w: waited %v for the TPM", ErrBusy, d.cfg.QueueWait)
	case <-ctx.Done():
		why = ctx.Err()
	case <-d.stopped:
		why = ErrClosed
	}
	if j.state.CompareAndSwap(jobQueued, jobCancelled) {
		return why
	}
	return <-j.done
}

// idleAfter is how long the device waits without commands before it lets
// go of a shared transport (swtpm's socket serves one client at a time).
const idleAfter = 50 * time.Millisecond

// idler is a transport that can release shared resources between bursts.
type idler interface{ Idle() }

func (d *Device) loop() {
	defer close(d.stopped)
	idle := time.NewTimer(idleAfter)
	defer idle.Stop()
	for {
		select {
		case <-idle.C:
			if i, ok := d.tr.(idler); ok {
				i.Idle()
			}
		case <-d.quit:
			for {
				select {
				case j := <-d.jobs:
					if j.state.CompareAndSwap(jobQueued, jobStarted) {
						j.done <- ErrClosed
					}
				default:
					return
				}
			}
		case j := <-d.jobs:
			if j.state.CompareAndSwap(jobQueued, jobStarted) {
				j.done <- d.exec(j.fn)
			}
			idle.Reset(idleAfter)
		}
	}
}

// exec runs fn after repairing the device state if an earlier command left
// it unknown. A command that finds its cached handles gone (the TPM
// restarted) is retried once on a fresh state.
func (d *Device) exec(fn func() error) error {
	if d.dirty {
		if err := d.reset(); err != nil {
			return err
		}
	}
	err := fn()
	if err == nil {
		return nil
	}
	if errors.Is(err, ErrUnavailable) {
		d.dirty = true
		return err
	}
	if isStateLost(err) {
		d.log.Warn("tpm: loaded objects are gone, reloading (did the TPM restart?)", "err", err)
		if rerr := d.reset(); rerr != nil {
			return rerr
		}
		err = fn()
		if errors.Is(err, ErrUnavailable) {
			d.dirty = true
		}
	}
	return err
}

// reset forgets every cached object and flushes all transient objects and
// sessions from the TPM, starting it up first if it was just powered on.
func (d *Device) reset() error {
	d.objs.clear()
	d.dirty = true
	err := d.flushAll()
	if errors.Is(err, tpm2.TPMRCInitialize) {
		d.log.Info("tpm: TPM was not started, sending TPM2_Startup")
		if _, serr := (tpm2.Startup{StartupType: tpm2.TPMSUClear}).Execute(d.tr); serr != nil {
			return fmt.Errorf("tpm: startup: %w", serr)
		}
		err = d.flushAll()
	}
	if err != nil {
		return err
	}
	limit, err := d.transientSlots()
	if err != nil {
		return err
	}
	d.objs.limit = limit
	d.dirty = false
	return nil
}

func (d *Device) flushAll() error {
	n := 0
	for _, ht := range []tpm2.TPMHT{tpm2.TPMHTTransient, tpm2.TPMHTHMACSession, tpm2.TPMHTPolicySession} {
		hs, err := d.handles(ht)
		if err != nil {
			return err
		}
		for _, h := range hs {
			if _, err := (tpm2.FlushContext{FlushHandle: h}).Execute(d.tr); err != nil {
				if errors.Is(err, ErrUnavailable) {
					return err
				}
				d.log.Warn("tpm: flush leftover handle", "handle", fmt.Sprintf("0x%08x", uint32(h)), "err", err)
				continue
			}
			n++
		}
	}
	if n > 0 {
		d.log.Info("tpm: flushed leftover handles", "count", n)
	}
	return nil
}

func (d *Device) handles(ht tpm2.TPMHT) ([]tpm2.TPMHandle, error) {
	var out []tpm2.TPMHandle
	next := uint32(ht) << 24
	for {
		rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: next, PropertyCount: 64}.Execute(d.tr)
		if err != nil {
			return nil, fmt.Errorf("tpm: list handles: %w", err)
		}
		hl, err := rsp.CapabilityData.Data.Handles()
		if err != nil {
			return nil, fmt.Errorf("tpm: list handles: %w", err)
		}
		for _, h := range hl.Handle {
			if uint32(h)>>24 != uint32(ht) {
				return out, nil
			}
			out = append(out, h)
		}
		if !rsp.MoreData || len(hl.Handle) == 0 {
			return out, nil
		}
		next = uint32(hl.Handle[len(hl.Handle)-1]) + 1
	}
}

// transientSlots returns how many transient objects the TPM can hold now.
// The kernel resource manager allows three per client whatever the TPM says.
func (d *Device) transientSlots() (int, error) {
	rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapTPMProperties, Property: uint32(tpm2.TPMPTHRTransientAvail), PropertyCount: 1}.Execute(d.tr)
	if err != nil {
		return 0, fmt.Errorf("tpm: read transient slots: %w", err)
	}
	props, err := rsp.CapabilityData.Data.TPMProperties()
	if err != nil || len(props.TPMProperty) == 0 || props.TPMProperty[0].Property != tpm2.TPMPTHRTransientAvail {
		return 3, nil
	}
	n := int(props.TPMProperty[0].Value)
	if d.addr.Kind == KindDevice && n > 3 {
		n = 3
	}
	if n < 2 {
		return 0, fmt.Errorf("tpm: only %d transient object slots free; another client holds the rest", n)
	}
	return n, nil
}

func (d *Device) flushHandle(h tpm2.TPMHandle) {
	if _, err := (tpm2.FlushContext{FlushHandle: h}).Execute(d.tr); err != nil {
		if errors.Is(err, ErrUnavailable) {
			d.dirty = true
		}
		d.log.Warn("tpm: flush", "handle", fmt.Sprintf("0x%08x", uint32(h)), "err", err)
	}
}
