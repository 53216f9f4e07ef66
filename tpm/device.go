package tpm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-tpm/tpm2"
)

// Config configures a Device. Zero fields take DefaultConfig's values.
type Config struct {
	// Address of the TPM, see ParseAddress.
	Address string
	// CommandTimeout bounds every TPM command except key generation.
	CommandTimeout time.Duration
	// KeygenTimeout bounds key and primary-key generation, which takes
	// seconds to minutes on hardware TPMs. The kernel allows such a
	// command 300 s before it gives up on the TPM: a shorter deadline
	// gives up on a command the TPM may still finish.
	KeygenTimeout time.Duration
	// QueueDepth bounds the operations of ClassAPI waiting for the TPM;
	// the other classes' bounds default to shares of it (see ClassConfig).
	QueueDepth int
	// QueueWait bounds how long an operation waits for its turn before it
	// fails with ErrBusy.
	QueueWait time.Duration
	// Classes sets each priority class's share of the TPM and bound on
	// waiting operations, indexed by Class. Zero fields take defaults.
	Classes [NumClasses]ClassConfig
	// SimulatorSeed fixes the simulator's seeds (simulator builds only);
	// zero means random.
	SimulatorSeed int64
	// Observer, when set, hears how long each TPM command and each wait
	// for the TPM took (metrics).
	Observer Observer

	// resourceManager makes the device treat the TPM as behind a kernel
	// resource manager whatever its address (tests: swtpm playing
	// /dev/tpmrm0's rules).
	resourceManager bool
}

// kernelKeygenTimeout is how long the kernel waits for TPM2_Create and
// TPM2_CreatePrimary before it gives up on the TPM.
const kernelKeygenTimeout = 300 * time.Second

// DefaultConfig is the configuration of a TPM on a Linux appliance.
func DefaultConfig() Config {
	return Config{
		Address:        DefaultAddress,
		CommandTimeout: 10 * time.Second,
		KeygenTimeout:  kernelKeygenTimeout,
		QueueDepth:     128,
		QueueWait:      5 * time.Second,
		Classes: [NumClasses]ClassConfig{
			// Depths left at zero follow QueueDepth (see ClassConfig).
			ClassAPI:          {Weight: defaultWeights[ClassAPI]},
			ClassHandshake:    {Weight: defaultWeights[ClassHandshake]},
			ClassHousekeeping: {Weight: defaultWeights[ClassHousekeeping]},
		},
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Address == "" {
		c.Address = d.Address
	}
	if c.CommandTimeout == 0 {
		c.CommandTimeout = d.CommandTimeout
	}
	if c.KeygenTimeout == 0 {
		c.KeygenTimeout = d.KeygenTimeout
	}
	if c.QueueDepth == 0 {
		c.QueueDepth = d.QueueDepth
	}
	if c.QueueWait == 0 {
		c.QueueWait = d.QueueWait
	}
	for cl := range NumClasses {
		cc := &c.Classes[cl]
		if cc.Weight == 0 {
			cc.Weight = defaultWeights[cl]
		}
		if cc.Depth == 0 {
			cc.Depth = defaultDepth(cl, c.QueueDepth)
		}
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
	for cl, cc := range c.Classes {
		switch {
		case cc.Weight < 0:
			return fmt.Errorf("tpm: %s class: weight must not be negative", Class(cl))
		case cc.Depth < 0:
			return fmt.Errorf("tpm: %s class: queue depth must not be negative", Class(cl))
		}
	}
	return nil
}

// Device is the one owner of a TPM. Command sequences run one at a time,
// each by the caller holding the device's token; a Device is safe for
// concurrent use.
type Device struct {
	addr Address
	cfg  Config
	log  *slog.Logger
	tr   *retryTransport
	// rm says the TPM is behind a kernel resource manager: brokerd
	// flushes only what it tracks, and keeps one key loaded.
	rm bool
	// rocaHook, set by tests only, stands in for ROCAFingerprint.
	rocaHook func(n *big.Int) bool

	// q's token is held by whoever runs a TPM command sequence: holding
	// it makes one the device's owner. Waiters queue for it by class.
	q         queue
	idle      *time.Timer  // releases a shared transport after a pause
	lastOK    atomic.Int64 // UnixNano of the last successful operation
	quit      chan struct{}
	closeOnce sync.Once

	// Set in Open, read-only afterwards.
	srkPub  tpm2.TPMTPublic
	srkName tpm2.TPM2BName

	// psrk is the persistent storage root key brokerd uses, nil if none
	// (the SRK is then a transient object, made from the template).
	// Owned by the token holder.
	psrk *object

	// Owned by the token holder.
	objs  objectCache
	dirty bool

	crypto cryptoState
}

// Open connects to the TPM, flushes transient objects and sessions left
// behind by earlier clients (not behind a resource manager, which flushes
// them itself and whose other clients' sessions must live on), finds or
// creates the storage root key and probes which key types and hashes the
// TPM has and whether it runs in FIPS mode. A TPM in failure mode fails it
// with ErrFailureMode.
func Open(cfg Config, log *slog.Logger) (*Device, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	addr, _ := ParseAddress(cfg.Address)
	to := timeouts{command: cfg.CommandTimeout, keygen: cfg.KeygenTimeout}
	tr, err := openTransport(addr, to, cfg.SimulatorSeed)
	if err != nil {
		return nil, err
	}
	d := &Device{
		addr: addr,
		cfg:  cfg,
		log:  log,
		tr:   &retryTransport{tr: tr, to: to, log: log, obs: cfg.Observer},
		rm:   addr.ResourceManager() || cfg.resourceManager,
		quit: make(chan struct{}),
		objs: objectCache{m: map[string]*object{}, saved: map[string]savedObject{}},
	}
	d.q.init(cfg)
	if d.rm && cfg.KeygenTimeout < kernelKeygenTimeout {
		log.Warn("tpm: tpm.keygen_timeout is below the 300 s the kernel gives key generation: brokerd may give up on one the TPM still finishes",
			"keygen_timeout", cfg.KeygenTimeout)
	}
	if err := d.setup(); err != nil {
		tr.Close()
		return nil, fmt.Errorf("tpm: open %s: %w", addr, err)
	}
	d.idle = time.AfterFunc(time.Hour, d.idleRelease)
	d.idle.Stop()
	return d, nil
}

// setup runs before the device is shared.
func (d *Device) setup() error {
	if err := d.reset(); err != nil {
		return err
	}
	srk, err := d.srk()
	if err != nil {
		return d.failure(err)
	}
	d.srkPub, d.srkName = *srk.pub, srk.name
	if err := d.adoptPersistentSRK(srk); err != nil {
		return err
	}
	return d.probe()
}

// Address returns the address the device was opened with.
func (d *Device) Address() Address { return d.addr }

// ResourceManager reports whether the device treats the TPM as behind a
// kernel resource manager (see Address.ResourceManager).
func (d *Device) ResourceManager() bool { return d.rm }

// Commands returns how many commands the device has sent to the TPM since
// Open, each attempt of a command the TPM asked to retry included.
func (d *Device) Commands() uint64 {
	var n uint64
	for _, c := range d.tr.counts() {
		n += c
	}
	return n
}

// CommandCounts returns how many commands the device has sent to the TPM
// since Open, by their TPM 2.0 Part 3 names ("TPM2_Sign").
func (d *Device) CommandCounts() map[string]uint64 { return d.tr.counts() }

// SRKName returns the Name of the storage root key: it identifies the TPM
// (and its owner seed), so state made on one TPM can be recognised on another.
func (d *Device) SRKName() []byte { return append([]byte(nil), d.srkName.Buffer...) }

// Close waits for the operation in flight, fails waiting ones with
// ErrClosed, flushes loaded objects and closes the transport.
func (d *Device) Close() error {
	var err error
	d.closeOnce.Do(func() {
		q := &d.q
		q.mu.Lock()
		q.closed = true
		close(d.quit) // waiters leave with ErrClosed
		var inFlight chan struct{}
		if q.busy {
			inFlight = make(chan struct{})
			q.closer = inFlight // giveBack hands the token here first
		} else {
			q.busy = true
		}
		q.mu.Unlock()
		if inFlight != nil {
			<-inFlight // the token is never given back
		}
		d.idle.Stop()
		if !d.dirty {
			d.objs.each(func(o *object) { d.flushHandle(o.handle) })
			d.dropSession()
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

// Flush unloads every object the device keeps loaded, and its signing
// session; they load again on demand. It frees the TPM's slots for
// another client.
func (d *Device) Flush(ctx context.Context) error {
	return d.do(ctx, func() error {
		d.objs.each(func(o *object) { d.flushHandle(o.handle) })
		d.objs.clear()
		d.dropSession()
		return nil
	})
}

// CachedObjects returns how many transient objects the device keeps loaded.
func (d *Device) CachedObjects(ctx context.Context) (int, error) {
	var n int
	err := d.do(ctx, func() error { n = len(d.objs.m); return nil })
	return n, err
}

// do runs fn as the device's owner, in the class ctx carries (ClassAPI
// if none); see doAs.
func (d *Device) do(ctx context.Context, fn func() error) error {
	return d.doAs(ctx, ClassAPI, fn)
}

// doAs runs fn as the device's owner. When the device is free, fn runs at
// once on the caller's goroutine; otherwise it waits in the queue of the
// class ctx carries, or of class def if ctx carries none. It fails with
// ErrBusy when that class's queue is full or fn could not start within
// QueueWait, with ErrClosed when the device closes first, and with ctx's
// error when ctx ends first. Once started, fn runs to the end (every TPM
// command has its own deadline).
func (d *Device) doAs(ctx context.Context, def Class, fn func() error) error {
	if err := d.acquire(ctx, def); err != nil {
		return err
	}
	return d.run(fn)
}

// run executes fn holding the token, then gives it back.
func (d *Device) run(fn func() error) error {
	defer d.giveBack()
	select {
	case <-d.quit:
		return ErrClosed
	default:
	}
	start := time.Now()
	err := d.exec(fn)
	end := time.Now()
	d.q.observe(end.Sub(start))
	if err == nil {
		d.lastOK.Store(end.UnixNano())
	}
	if d.rm && !d.dirty {
		d.keepKeyInUse()
	}
	d.idle.Reset(idleAfter)
	return err
}

// idleAfter is how long the device waits without commands before it lets
// go of a shared transport (swtpm's socket serves one client at a time).
const idleAfter = 50 * time.Millisecond

// idler is a transport that can release shared resources between bursts.
type idler interface{ Idle() }

// idleRelease lets go of the transport if nobody is using the device.
func (d *Device) idleRelease() {
	q := &d.q
	q.mu.Lock()
	if q.busy || q.closed { // in use, the current owner re-arms the timer; or closed
		q.mu.Unlock()
		return
	}
	q.busy = true
	q.mu.Unlock()
	d.tr.Idle()
	d.giveBack()
}

// LastSuccess returns when a TPM operation last succeeded (zero if none
// has since Open). A TPM that is busy but working keeps it recent.
func (d *Device) LastSuccess() time.Time {
	if n := d.lastOK.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
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
// Behind a resource manager it flushes nothing: the objects and the
// session brokerd tracked went with the file the transport let go of (or
// with the TPM's restart), and every other session on the TPM is another
// program's.
func (d *Device) reset() error {
	d.objs.clear()
	d.forgetSession() // flushAll flushes it
	d.dirty = true
	err := d.flushLeftovers()
	if errors.Is(err, tpm2.TPMRCInitialize) {
		d.log.Info("tpm: TPM was not started, sending TPM2_Startup")
		if _, serr := (tpm2.Startup{StartupType: tpm2.TPMSUClear}).Execute(d.tr); serr != nil {
			return fmt.Errorf("tpm: startup: %w", serr)
		}
		err = d.flushLeftovers()
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

// flushLeftovers flushes what earlier clients, crashes and timed-out
// commands left in a TPM without a resource manager. Behind one, it only
// checks that the TPM answers (and has been started up).
func (d *Device) flushLeftovers() error {
	if d.rm {
		_, err := d.handles(tpm2.TPMHTTransient)
		return err
	}
	return d.flushAll()
}

// flushAll flushes every transient object and session of the TPM.
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

// Clock is the TPM's clock (milliseconds it has been powered, across its
// life) and its reset and restart counters.
type Clock struct {
	Clock        uint64
	ResetCount   uint32
	RestartCount uint32
	// Safe says no later clock value was ever reported before.
	Safe bool
}

// ReadClock reads the TPM's clock and counters (TPM2_ReadClock).
func (d *Device) ReadClock(ctx context.Context) (Clock, error) {
	var c Clock
	err := d.do(ctx, func() error {
		rsp, err := tpm2.ReadClock{}.Execute(d.tr)
		if err != nil {
			return fmt.Errorf("tpm: read clock: %w", err)
		}
		ci := rsp.CurrentTime.ClockInfo
		c = Clock{Clock: ci.Clock, ResetCount: ci.ResetCount, RestartCount: ci.RestartCount, Safe: bool(ci.Safe)}
		return nil
	})
	return c, err
}
