package tpm

import (
	"context"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// SRKPersistence says what PersistSRK found or did.
type SRKPersistence int

// What PersistSRK found or did.
const (
	// SRKPersistent: brokerd's storage root key was persistent already.
	SRKPersistent SRKPersistence = iota
	// SRKMadePersistent: PersistSRK made it persistent.
	SRKMadePersistent
	// SRKHandleTaken: another key (another template) is at 0x81000001;
	// brokerd leaves it there and keeps using a transient SRK.
	SRKHandleTaken
	// SRKOwnerAuthSet: the owner hierarchy has an auth value, which
	// brokerd does not know; the SRK stays transient.
	SRKOwnerAuthSet
)

// String says it for an operator.
func (p SRKPersistence) String() string {
	switch p {
	case SRKPersistent:
		return "the storage root key is persistent at 0x81000001"
	case SRKMadePersistent:
		return "the storage root key was made persistent at 0x81000001"
	case SRKHandleTaken:
		return "another key (not of brokerd's SRK template) is persistent at 0x81000001: brokerd leaves it and makes its storage root key as a transient object"
	case SRKOwnerAuthSet:
		return "the owner hierarchy has an auth value: brokerd cannot make its storage root key persistent and makes it as a transient object"
	}
	return fmt.Sprintf("SRKPersistence(%d)", int(p))
}

// PersistSRK makes the storage root key persistent at 0x81000001
// (TPM2_EvictControl, as systemd's tpm2-setup does), when nothing is there
// yet and the owner hierarchy has no auth value. The device uses it from
// then on, as every later Open does: behind a resource manager a
// transient SRK costs a context load and save around each command that
// needs it, and a key derivation after each TPM reset. It writes to the
// TPM's NV memory, so it belongs in set-up (brokerd init), not in every
// start.
func (d *Device) PersistSRK(ctx context.Context) (SRKPersistence, error) {
	var res SRKPersistence
	err := d.do(ctx, func() error {
		var err error
		res, err = d.persistSRK()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("tpm: make the storage root key persistent: %w", err)
	}
	return res, nil
}

func (d *Device) persistSRK() (SRKPersistence, error) {
	if d.psrk != nil {
		return SRKPersistent, nil
	}
	p, err := d.readPersistent(srkPersistentHandle)
	if err != nil {
		return 0, err
	}
	if p != nil {
		return SRKHandleTaken, nil
	}
	props, err := d.properties(tpm2.TPMPTPermanent, 1)
	if err != nil {
		return 0, err
	}
	if props[tpm2.TPMPTPermanent]&permOwnerAuthSet != 0 {
		return SRKOwnerAuthSet, nil
	}
	srk, err := d.srk()
	if err != nil {
		return 0, err
	}
	_, err = tpm2.EvictControl{
		Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		ObjectHandle:     tpm2.NamedHandle{Handle: srk.handle, Name: srk.name},
		PersistentHandle: srkPersistentHandle,
	}.Execute(d.tr)
	if err != nil {
		return 0, fmt.Errorf("evict control: %w", err)
	}
	if err := d.adoptPersistentSRK(srk); err != nil {
		return 0, err
	}
	if d.psrk == nil {
		return 0, fmt.Errorf("the key made persistent at 0x%08x is not the storage root key", uint32(srkPersistentHandle))
	}
	return SRKMadePersistent, nil
}

// PersistentSRK reports whether the device uses a persistent storage root
// key.
func (d *Device) PersistentSRK(ctx context.Context) (bool, error) {
	var p bool
	err := d.do(ctx, func() error { p = d.psrk != nil; return nil })
	return p, err
}
