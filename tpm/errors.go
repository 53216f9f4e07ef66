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
	// ErrUnsupported is returned for algorithms or key sizes the TPM cannot
	// hold.
	ErrUnsupported = errors.New("not supported by this TPM")
	// ErrWrongTPM is returned when a key blob or a parent belongs to another
	// TPM: it cannot be loaded or imported here.
	ErrWrongTPM = errors.New("key material belongs to a different TPM")
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

// isWrongTPM reports whether a Load or Import failed because the blob was
// wrapped for another TPM (or was altered).
func isWrongTPM(err error) bool {
	for _, rc := range []tpm2.TPMRC{tpm2.TPMRCIntegrity, tpm2.TPMRCBinding} {
		if errors.Is(err, rc) {
			return true
		}
	}
	return false
}

// isUnwrapFailure reports whether TPM2_Import failed because the blob's
// seed or integrity does not check out under the parent: it was wrapped for
// another TPM or altered. libtpms answers a seed that does not decrypt under
// an RSA parent with TPM_RC_FAILURE, and keeps working.
func isUnwrapFailure(err error) bool {
	if isWrongTPM(err) {
		return true
	}
	for _, rc := range []tpm2.TPMRC{tpm2.TPMRCValue, tpm2.TPMRCSize, tpm2.TPMRCFailure, tpm2.TPMRCECCPoint, tpm2.TPMRCNoResult} {
		if errors.Is(err, rc) {
			return true
		}
	}
	return false
}
