package tpm

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// object is a transient object loaded in the TPM.
type object struct {
	handle tpm2.TPMHandle
	name   tpm2.TPM2BName
	pub    *tpm2.TPMTPublic // primaries only
	used   uint64
	pinned bool
}

// objectCache tracks loaded transient objects, and the saved contexts of
// objects that are costly to load again. Only the token holder touches
// it.
type objectCache struct {
	limit int // transient slots the TPM offers us
	tick  uint64
	m     map[string]*object
	// saved holds contexts (TPM2_ContextSave) of primary keys and of keys
	// under an endorsement key, by cache id: loading one again is one
	// TPM2_ContextLoad rather than a key derivation (an RSA EK takes
	// seconds on a chip) or a policy session. A TPM reset makes them
	// unloadable; they are made again then.
	saved map[string]savedObject
}

// savedObject is a saved context and what the device knows of its object.
type savedObject struct {
	ctx  tpm2.TPMSContext
	name tpm2.TPM2BName
	pub  *tpm2.TPMTPublic
}

func (c *objectCache) get(id string) *object {
	o := c.m[id]
	if o != nil {
		c.tick++
		o.used = c.tick
	}
	return o
}

func (c *objectCache) put(id string, o *object) {
	c.tick++
	o.used = c.tick
	c.m[id] = o
}

func (c *objectCache) clear() { clear(c.m) }

func (c *objectCache) each(fn func(*object)) {
	for _, o := range c.m {
		fn(o)
	}
}

// lru returns the least recently used object that is not pinned.
func (c *objectCache) lru() (string, *object) {
	var (
		id   string
		best *object
	)
	for k, o := range c.m {
		if o.pinned {
			continue
		}
		if best == nil || o.used < best.used {
			id, best = k, o
		}
	}
	return id, best
}

// evictOne flushes the least recently used unpinned object.
func (d *Device) evictOne() error {
	id, o := d.objs.lru()
	if o == nil {
		return fmt.Errorf("tpm: all %d transient slots are in use", d.objs.limit)
	}
	delete(d.objs.m, id)
	if _, err := (tpm2.FlushContext{FlushHandle: o.handle}).Execute(d.tr); err != nil {
		return fmt.Errorf("tpm: flush 0x%08x: %w", uint32(o.handle), err)
	}
	return nil
}

// withSlot runs fn, a command that needs a free transient slot (Load,
// Create, CreatePrimary, Import), after evicting objects until one is free.
// If the TPM still reports no object memory (another client holds slots),
// it lowers the limit, evicts one more and tries again.
func (d *Device) withSlot(fn func() error) error {
	for len(d.objs.m) >= d.objs.limit {
		if err := d.evictOne(); err != nil {
			return err
		}
	}
	err := fn()
	for errors.Is(err, tpm2.TPMRCObjectMemory) && len(d.objs.m) > 0 {
		d.objs.limit = len(d.objs.m)
		if eerr := d.evictOne(); eerr != nil {
			return err
		}
		err = fn()
	}
	return err
}

// srk returns the storage root key: the persistent one if the device uses
// it, else a transient one from the standard ECC SRK template (loaded, or
// loaded again from its saved context, or made). Its Name must stay the
// one seen at Open: otherwise the TPM was cleared or replaced and no
// stored key will load.
func (d *Device) srk() (*object, error) {
	if d.psrk != nil {
		return d.psrk, nil
	}
	o, err := d.primary("srk", tpm2.TPMRHOwner, tpm2.ECCSRKTemplate)
	if err != nil {
		return nil, fmt.Errorf("tpm: create storage root key: %w", err)
	}
	if len(d.srkName.Buffer) > 0 && !bytes.Equal(o.name.Buffer, d.srkName.Buffer) {
		delete(d.objs.m, "srk")
		delete(d.objs.saved, "srk")
		d.flushHandle(o.handle)
		return nil, fmt.Errorf("%w: the storage root key changed (TPM cleared or replaced)", ErrWrongTPM)
	}
	return o, nil
}

// ek returns the endorsement key of the given kind, from the TCG default
// template (loaded, loaded again from its saved context, or made).
func (d *Device) ek(p Parent) (*object, error) {
	tmpl, err := ekTemplate(p)
	if err != nil {
		return nil, err
	}
	o, err := d.primary(string(p), tpm2.TPMRHEndorsement, tmpl)
	if err != nil {
		return nil, fmt.Errorf("tpm: create endorsement key: %w", err)
	}
	return o, nil
}

// primary returns the primary key cached as id: loaded, or loaded again
// from its saved context, or made from tmpl in hierarchy (and its context
// saved).
func (d *Device) primary(id string, hierarchy tpm2.TPMHandle, tmpl tpm2.TPMTPublic) (*object, error) {
	if o := d.objs.get(id); o != nil {
		return o, nil
	}
	o, err := d.fromSaved(id)
	if o != nil || err != nil {
		return o, err
	}
	if o, err = d.createPrimary(hierarchy, tmpl); err != nil {
		return nil, err
	}
	d.objs.put(id, o)
	return o, d.save(id, o)
}

// fromSaved loads the object cached as id from its saved context, and
// caches it; it returns nil, and forgets the context, when the TPM no
// longer takes it (it was reset since).
func (d *Device) fromSaved(id string) (*object, error) {
	sv, ok := d.objs.saved[id]
	if !ok {
		return nil, nil
	}
	var o *object
	err := d.withSlot(func() error {
		rsp, err := tpm2.ContextLoad{Context: sv.ctx}.Execute(d.tr)
		if err != nil {
			return err
		}
		o = &object{handle: rsp.LoadedHandle, name: sv.name, pub: sv.pub}
		return nil
	})
	switch {
	case errors.Is(err, ErrUnavailable):
		return nil, err
	case err != nil:
		d.log.Info("tpm: a saved context no longer loads (the TPM was reset); loading the object anew", "object", id, "err", err)
		delete(d.objs.saved, id)
		return nil, nil
	}
	d.objs.put(id, o)
	return o, nil
}

// save keeps the context of the loaded object o, cached as id.
func (d *Device) save(id string, o *object) error {
	rsp, err := tpm2.ContextSave{SaveHandle: o.handle}.Execute(d.tr)
	if err != nil {
		return fmt.Errorf("tpm: save the context of %s: %w", id, err)
	}
	d.objs.saved[id] = savedObject{ctx: rsp.Context, name: o.name, pub: o.pub}
	return nil
}

// srkPersistentHandle is where the TCG's provisioning guidance, and
// systemd's tpm2-setup after it, keep the storage root key.
const srkPersistentHandle tpm2.TPMHandle = 0x81000001

// adoptPersistentSRK makes the device use the persistent storage root key
// instead of srk, the transient one from brokerd's template, when it is
// the same key (the same Name: the same template under the same owner
// seed), and flushes srk. A persistent SRK costs no slot that a resource
// manager swaps in and out around every command, and no key derivation
// after a TPM reset. A persistent key of another template (systemd's
// leaves the unique field empty, brokerd's follows go-tpm's and fills it
// with zeros: two different keys) is left alone: keys made under the
// transient SRK would not load under it.
func (d *Device) adoptPersistentSRK(srk *object) error {
	p, err := d.readPersistent(srkPersistentHandle)
	if err != nil || p == nil {
		return err
	}
	if !bytes.Equal(p.name.Buffer, srk.name.Buffer) {
		d.log.Info("tpm: the persistent key at 0x81000001 is not the storage root key of brokerd's template; using a transient one",
			"persistent", nameHex(p.name), "brokerd", nameHex(srk.name))
		return nil
	}
	delete(d.objs.m, "srk")
	delete(d.objs.saved, "srk")
	d.flushHandle(srk.handle)
	d.psrk = p
	return nil
}

// readPersistent returns the persistent object at h, or nil if there is
// none.
func (d *Device) readPersistent(h tpm2.TPMHandle) (*object, error) {
	rsp, err := tpm2.ReadPublic{ObjectHandle: h}.Execute(d.tr)
	if errors.Is(err, tpm2.TPMRCHandle) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("tpm: read persistent object 0x%08x: %w", uint32(h), err)
	}
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		return nil, fmt.Errorf("tpm: read persistent object 0x%08x: %w", uint32(h), err)
	}
	return &object{handle: h, name: rsp.Name, pub: pub, pinned: true}, nil
}

func (d *Device) createPrimary(hierarchy tpm2.TPMHandle, tmpl tpm2.TPMTPublic) (*object, error) {
	var o *object
	err := d.withSlot(func() error {
		rsp, err := tpm2.CreatePrimary{
			PrimaryHandle: tpm2.AuthHandle{Handle: hierarchy, Auth: tpm2.PasswordAuth(nil)},
			InPublic:      tpm2.New2B(tmpl),
		}.Execute(d.tr)
		if err != nil {
			return err
		}
		pub, err := rsp.OutPublic.Contents()
		if err != nil {
			d.flushHandle(rsp.ObjectHandle)
			return err
		}
		o = &object{handle: rsp.ObjectHandle, name: rsp.Name, pub: pub}
		return nil
	})
	return o, err
}

// parent returns the loaded parent p and the authorization to use it.
func (d *Device) parent(p Parent) (*object, tpm2.AuthHandle, error) {
	switch p {
	case ParentSRK:
		o, err := d.srk()
		if err != nil {
			return nil, tpm2.AuthHandle{}, err
		}
		return o, tpm2.AuthHandle{Handle: o.handle, Name: o.name, Auth: tpm2.PasswordAuth(nil)}, nil
	case ParentECCEK, ParentRSAEK:
		o, err := d.ek(p)
		if err != nil {
			return nil, tpm2.AuthHandle{}, err
		}
		return o, tpm2.AuthHandle{Handle: o.handle, Name: o.name, Auth: ekPolicy()}, nil
	}
	return nil, tpm2.AuthHandle{}, fmt.Errorf("tpm: unknown parent %q", p)
}

// ekPolicy satisfies the TCG EK templates' policy, PolicySecret(endorsement),
// in a one-shot policy session.
func ekPolicy() tpm2.Session {
	return tpm2.Policy(tpm2.TPMAlgSHA256, 16, func(t transport.TPM, h tpm2.TPMISHPolicy, nonceTPM tpm2.TPM2BNonce) error {
		_, err := tpm2.PolicySecret{
			AuthHandle:    tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
			PolicySession: h,
			NonceTPM:      nonceTPM,
		}.Execute(t)
		return err
	})
}

// load makes k resident and returns its object. A key under an
// endorsement key is loaded from its parent once; its context is saved,
// and it loads again from that, without the endorsement key.
func (d *Device) load(k *Key) (*object, error) {
	if o := d.objs.get(k.cacheID); o != nil {
		return o, nil
	}
	if o, err := d.fromSaved(k.cacheID); o != nil || err != nil {
		return o, err
	}
	par, auth, err := d.parent(k.blob.Parent)
	if err != nil {
		return nil, err
	}
	if len(k.blob.ParentName) > 0 && !bytes.Equal(k.blob.ParentName, par.name.Buffer) {
		return nil, fmt.Errorf("tpm: load key %s: %w: it was made under another %s", k, ErrWrongTPM, k.blob.Parent)
	}
	par.pinned = true
	defer func() { par.pinned = false }()
	var o *object
	err = d.withSlot(func() error {
		rsp, err := tpm2.Load{
			ParentHandle: auth,
			InPrivate:    tpm2.TPM2BPrivate{Buffer: k.blob.Private},
			InPublic:     tpm2.New2B(k.pub),
		}.Execute(d.tr)
		if err != nil {
			return err
		}
		o = &object{handle: rsp.ObjectHandle, name: rsp.Name}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("tpm: load key %s: %w", k, d.loadError(k, err))
	}
	d.objs.put(k.cacheID, o)
	if k.blob.Parent == ParentSRK {
		return o, nil
	}
	return o, d.save(k.cacheID, o)
}

// keepKeyInUse flushes every cached object but the key used last: behind a
// resource manager, each transient object a client keeps costs a context
// load before and a context save after every command it sends.
func (d *Device) keepKeyInUse() {
	var keep *object
	for _, o := range d.objs.m {
		if o.pub == nil && (keep == nil || o.used > keep.used) {
			keep = o
		}
	}
	for id, o := range d.objs.m {
		if o != keep {
			delete(d.objs.m, id)
			d.flushHandle(o.handle)
		}
	}
}

// forget flushes k if it is loaded, and forgets its saved context.
func (d *Device) forget(k *Key) {
	delete(d.objs.saved, k.cacheID)
	if o := d.objs.m[k.cacheID]; o != nil {
		delete(d.objs.m, k.cacheID)
		d.flushHandle(o.handle)
	}
}

func nameHex(n tpm2.TPM2BName) string { return hex.EncodeToString(n.Buffer) }
