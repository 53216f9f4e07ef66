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

// objectCache tracks loaded transient objects. Only the token holder
// touches it.
type objectCache struct {
	limit int // transient slots the TPM offers us
	tick  uint64
	m     map[string]*object
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

// srk returns the storage root key, creating it from the standard ECC SRK
// template if it is not loaded. Its Name must stay the one seen at Open:
// otherwise the TPM was cleared or replaced and no stored key will load.
func (d *Device) srk() (*object, error) {
	if o := d.objs.get("srk"); o != nil {
		return o, nil
	}
	o, err := d.createPrimary(tpm2.TPMRHOwner, tpm2.ECCSRKTemplate)
	if err != nil {
		return nil, fmt.Errorf("tpm: create storage root key: %w", err)
	}
	if len(d.srkName.Buffer) > 0 && !bytes.Equal(o.name.Buffer, d.srkName.Buffer) {
		d.flushHandle(o.handle)
		return nil, fmt.Errorf("%w: the storage root key changed (TPM cleared or replaced)", ErrWrongTPM)
	}
	d.objs.put("srk", o)
	return o, nil
}

// ek returns the endorsement key of the given kind, creating it from the
// TCG default template.
func (d *Device) ek(p Parent) (*object, error) {
	tmpl, err := ekTemplate(p)
	if err != nil {
		return nil, err
	}
	if o := d.objs.get(string(p)); o != nil {
		return o, nil
	}
	o, err := d.createPrimary(tpm2.TPMRHEndorsement, tmpl)
	if err != nil {
		return nil, fmt.Errorf("tpm: create endorsement key: %w", err)
	}
	d.objs.put(string(p), o)
	return o, nil
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

// load makes k resident and returns its object.
func (d *Device) load(k *Key) (*object, error) {
	if o := d.objs.get(k.cacheID); o != nil {
		return o, nil
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
	return o, nil
}

// forget flushes k if it is loaded.
func (d *Device) forget(k *Key) {
	if o := d.objs.m[k.cacheID]; o != nil {
		delete(d.objs.m, k.cacheID)
		d.flushHandle(o.handle)
	}
}

func nameHex(n tpm2.TPM2BName) string { return hex.EncodeToString(n.Buffer) }
