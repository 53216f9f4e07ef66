package tpm

import (
	"errors"

	"github.com/google/go-tpm/tpm2"
)

// The sentinels' messages have no "tpm:" prefix: they follow one (or a
// caller's operation) when wrapped.
var (
	// ErrBusy is returned when the command queue is full or a command waited
	// longer than the configured budget to reach the TPM. Callers may retry.
	ErrBusy = errors.New("TPM busy")
	// ErrUnavailable is returned when the TPM cannot be reached or did not
	// answer within the command deadline.
	ErrUnavailable = errors.New("TPM unavailable")
	// ErrClosed is returned by operations on a closed Device.
	ErrClosed = errors.New("TPM device closed")
	// ErrUnsupported is returned for algorithms, key sizes and hashes the
	// TPM does not implement.
	ErrUnsupported = errors.New("unsupported by this TPM")
	// ErrWrongTPM is returned when a key blob or a parent belongs to another
	// TPM: it cannot be loaded or imported here.
	ErrWrongTPM = errors.New("key material belongs to a different TPM")
	// ErrCorruptBlob is returned when a key blob made for this TPM does not
	// load or import: its bytes were altered or damaged.
	ErrCorruptBlob = errors.New("key blob is damaged")
	// ErrFailureMode is returned when the TPM is in failure mode: its
	// self-test failed, and it refuses every command but a few status
	// queries until it is reset (a reboot).
	ErrFailureMode = errors.New("the TPM is in failure mode")
)

// isStateLost reports whether err says that a handle the device cached no
// longer exists on the TPM (the TPM restarted or was reset), so the command
// may be retried after the cache is dropped.
func isStateLost(err error) bool {
	for _, rc := range []tpm2.TPMRC{tpm2.TPMRCReferenceH0, tpm2.TPMRCReferenceH1,
		tpm2.TPMRCReferenceH2, tpm2.TPMRCHandle, tpm2.TPMRCInitialize} {
		if errors.Is(err, rc) {
			return true
		}
	}
	return false
}
