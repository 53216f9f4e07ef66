package tpm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// Four conditions look alike in TPM return codes and mean different
// things to an operator: an algorithm the TPM does not implement
// (ErrUnsupported: seal the key instead, or use another algorithm), a
// TPM in failure mode (ErrFailureMode: reboot), key material of another
// TPM (ErrWrongTPM: import the key again from its source) and a blob of
// this TPM that was altered (ErrCorruptBlob: the same, and find out who
// altered it). The functions here tell them apart.

// doChecked runs fn as the device's owner (see doAs) and tells a TPM in
// failure mode from a command's own TPM_RC_FAILURE.
func (d *Device) doChecked(ctx context.Context, def Class, fn func() error) error {
	return d.doAs(ctx, def, func() error { return d.failure(fn()) })
}

// failure checks, after a command failed with TPM_RC_FAILURE, whether the
// TPM is in failure mode (TPM2_GetTestResult, which such a TPM answers),
// and says so with ErrFailureMode. libtpms also answers TPM_RC_FAILURE to
// an import seed that does not decrypt under an RSA parent, and keeps
// working: then err is returned as it is. Token holder only.
func (d *Device) failure(err error) error {
	if err == nil || !errors.Is(err, tpm2.TPMRCFailure) || errors.Is(err, ErrFailureMode) {
		return err
	}
	result, terr := d.testResult()
	switch {
	case terr != nil:
		d.log.Warn("tpm: TPM2_GetTestResult after TPM_RC_FAILURE", "err", terr)
		return err
	case result != tpm2.TPMRCSuccess:
		return fmt.Errorf("%w (self-test result: %w; reboot to reset it): %w", ErrFailureMode, result, err)
	}
	return err
}

// testResult runs TPM2_GetTestResult and returns the TPM's self-test
// result. go-tpm has no such command; it has neither handles nor
// parameters.
func (d *Device) testResult() (tpm2.TPMRC, error) {
	cmd := binary.BigEndian.AppendUint16(nil, uint16(tpm2.TPMSTNoSessions))
	cmd = binary.BigEndian.AppendUint32(cmd, 10)
	cmd = binary.BigEndian.AppendUint32(cmd, uint32(tpm2.TPMCCGetTestResult))
	rsp, err := d.tr.Send(cmd)
	if err != nil {
		return 0, err
	}
	if len(rsp) < 10 {
		return 0, errors.New("malformed TPM response")
	}
	if rc := tpm2.TPMRC(binary.BigEndian.Uint32(rsp[6:10])); rc != tpm2.TPMRCSuccess {
		return 0, rc
	}
	_, rest, err := read2B(rsp[10:]) // outData: vendor-specific
	if err != nil || len(rest) < 4 {
		return 0, errors.New("malformed TPM2_GetTestResult response")
	}
	return tpm2.TPMRC(binary.BigEndian.Uint32(rest)), nil
}

// isAlgorithmCode reports whether a format-1 code says the TPM does not
// implement a parameter (rather than that the parameter is malformed).
func isAlgorithmCode(err error) bool {
	for _, rc := range []tpm2.TPMRC{tpm2.TPMRCAsymmetric, tpm2.TPMRCKeySize, tpm2.TPMRCCurve,
		tpm2.TPMRCHash, tpm2.TPMRCScheme, tpm2.TPMRCSymmetric, tpm2.TPMRCKDF, tpm2.TPMRCMode} {
		if errors.Is(err, rc) {
			return true
		}
	}
	return false
}

// parameter returns which command parameter (1-based) a format-1 error
// names, or 0.
func parameter(err error) int {
	var f tpm2.TPMFmt1Error
	if !errors.As(err, &f) {
		return 0
	}
	if ok, n := f.Parameter(); ok {
		return n
	}
	return 0
}

// TPM2_Import's parameters, as format-1 errors number them.
const (
	importObjectPublic = 2
	importDuplicate    = 3
	importInSymSeed    = 4
)

// importError classifies a failed TPM2_Import. parentKnown says the blob
// was made for this parent (its Name was checked): then a blob that does
// not unwrap was altered, not made for another TPM. Token holder only.
func (d *Device) importError(err error, parentKnown bool) error {
	err = d.failure(err)
	if errors.Is(err, ErrFailureMode) {
		return err
	}
	unwrap := errors.Is(err, tpm2.TPMRCIntegrity) || errors.Is(err, tpm2.TPMRCBinding) ||
		errors.Is(err, tpm2.TPMRCFailure) || errors.Is(err, tpm2.TPMRCNoResult) || errors.Is(err, tpm2.TPMRCECCPoint)
	switch p := parameter(err); {
	case p == importObjectPublic:
		// brokerd made the public area (or checked it is brokerd's):
		// the TPM refuses what it describes.
		return fmt.Errorf("the key is %w: the TPM refuses its public area (%w)", ErrUnsupported, err)
	case p == importDuplicate, p == importInSymSeed:
		unwrap = true
	}
	switch {
	case unwrap && parentKnown:
		return fmt.Errorf("%w: it names this TPM's parent but does not unwrap under it: altered on the way (%w)", ErrCorruptBlob, err)
	case unwrap:
		return fmt.Errorf("%w: the TPM cannot unwrap the key (%w)", ErrWrongTPM, err)
	}
	return err
}

// TPM2_Load's parameters, as format-1 errors number them.
const (
	loadInPrivate = 1
	loadInPublic  = 2
)

// loadError classifies a failed TPM2_Load of k under parent. Token holder
// only.
func (d *Device) loadError(k *Key, err error) error {
	err = d.failure(err)
	switch p := parameter(err); {
	case errors.Is(err, ErrFailureMode):
		return err
	case p == loadInPublic && isAlgorithmCode(err):
		return fmt.Errorf("%s keys are %w (%w)", k.alg, ErrUnsupported, err)
	case errors.Is(err, tpm2.TPMRCIntegrity), errors.Is(err, tpm2.TPMRCBinding):
		if len(k.blob.ParentName) == 0 {
			// A blob from before parent names were kept: it belongs to
			// another TPM, or was altered; the state file's SRK check
			// tells which to the key registry.
			return fmt.Errorf("%w, or it was altered (%w)", ErrWrongTPM, err)
		}
		return fmt.Errorf("%w: it was made under this TPM's %s but fails its integrity check (%w)", ErrCorruptBlob, k.blob.Parent, err)
	case p == loadInPrivate, p == loadInPublic:
		return fmt.Errorf("%w (%w)", ErrCorruptBlob, err)
	}
	return err
}
