package tpm

import (
	"context"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// GuardLockout gives the TPM's lockout hierarchy a fresh random auth value
// when it has none (TPM2_HierarchyChangeAuth), so that the users of the
// TPM device can no longer clear the TPM (TPM2_Clear) or reset its
// dictionary-attack counter with the lockout hierarchy. keep receives the
// value first, to store it: a value the TPM has but nobody kept would
// leave only the platform hierarchy to clear the TPM with. The value
// travels to the TPM encrypted, in a session salted with the storage root
// key, never in clear on the bus.
//
// It returns false, and changes nothing, when the lockout hierarchy has an
// auth value already (set by someone else: Windows, an earlier init,
// tpm2_changeauth). An error from keep is returned as is and the TPM is
// left alone; an error from the TPM after keep may leave the value kept
// but not set (ErrUnavailable: set or not, nobody knows).
func (d *Device) GuardLockout(ctx context.Context, keep func(auth []byte) error) (bool, error) {
	var set bool
	err := d.do(ctx, func() error {
		p, err := d.properties(tpm2.TPMPTPermanent, 1)
		if err != nil {
			return err
		}
		if p[tpm2.TPMPTPermanent]&permLockoutAuthSet != 0 {
			return nil
		}
		auth, err := newAuth()
		if err != nil {
			return err
		}
		if err := keep(auth); err != nil {
			return err
		}
		srk, err := d.srk()
		if err != nil {
			return err
		}
		// The empty current auth goes as a password; a second session,
		// salted, encrypts the new value. (With the HMAC session itself as
		// the authorization, the TPM answers with an HMAC keyed by the new
		// value, which go-tpm does not expect.)
		encrypt := tpm2.HMAC(tpm2.TPMAlgSHA256, 16, tpm2.AESEncryption(128, tpm2.EncryptIn), tpm2.Salted(srk.handle, d.srkPub))
		_, err = tpm2.HierarchyChangeAuth{
			AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHLockout, Auth: tpm2.PasswordAuth(nil)},
			NewAuth:    tpm2.TPM2BAuth{Buffer: auth},
		}.Execute(d.tr, encrypt)
		if err != nil {
			return fmt.Errorf("change the lockout auth: %w", err)
		}
		set = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("tpm: guard the lockout hierarchy: %w", err)
	}
	return set, nil
}
