package tpm

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/go-tpm/tpm2"
)

// modeFIPS1402 is TPMA_MODES' FIPS_140_2 bit: the TPM runs in FIPS 140-2
// mode. Such TPMs refuse raw RSA (TPM2_RSA_Decrypt with scheme NULL).
const modeFIPS1402 = 1

// probe learns what the TPM offers: the hashes it implements, whether it
// runs in FIPS 140-2 mode, and which key algorithms it holds. It runs in
// Open, before the device is shared. A TestParms that cannot tell (a
// warning, a failure) leaves the algorithm unknown: it is asked again
// when a key of it is created or imported, never taken for "unsupported".
func (d *Device) probe() error {
	hashes, err := d.readHashes()
	if err != nil {
		return err
	}
	d.crypto.hashes = hashes
	if d.crypto.fips, err = d.readFIPS(); err != nil {
		return err
	}
	if d.crypto.fips {
		d.log.Info("tpm: the TPM runs in FIPS 140-2 mode: RSA keys sign with TPM2_Sign, not raw RSA")
	}
	d.crypto.support = map[Algorithm]error{}
	for _, alg := range Algorithms {
		err := d.testParms(alg)
		if errors.Is(err, ErrUnavailable) {
			return err
		}
		if err != nil && !errors.Is(err, ErrUnsupported) {
			d.log.Warn("tpm: cannot tell whether the TPM holds keys of this kind; asking again when one is made", "algorithm", alg, "err", err)
		}
	}
	return nil
}

// readHashes lists the hash algorithms the TPM implements (TPM_CAP_ALGS).
func (d *Device) readHashes() (map[tpm2.TPMIAlgHash]bool, error) {
	hashes := map[tpm2.TPMIAlgHash]bool{}
	next := uint32(0)
	for {
		rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapAlgs, Property: next, PropertyCount: 64}.Execute(d.tr)
		if err != nil {
			return nil, fmt.Errorf("tpm: read algorithms: %w", err)
		}
		algs, err := rsp.CapabilityData.Data.Algorithms()
		if err != nil {
			return nil, fmt.Errorf("tpm: read algorithms: %w", err)
		}
		for _, a := range algs.AlgProperties {
			if a.AlgProperties.Hash {
				hashes[a.Alg] = true
			}
		}
		if !rsp.MoreData || len(algs.AlgProperties) == 0 {
			return hashes, nil
		}
		next = uint32(algs.AlgProperties[len(algs.AlgProperties)-1].Alg) + 1
	}
}

// readFIPS reads TPM_PT_MODES. A TPM older than the property (spec 1.38)
// does not return it: not in FIPS mode.
func (d *Device) readFIPS() (bool, error) {
	rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapTPMProperties, Property: uint32(tpm2.TPMPTModes), PropertyCount: 1}.Execute(d.tr)
	if err != nil {
		return false, fmt.Errorf("tpm: read modes: %w", err)
	}
	props, err := rsp.CapabilityData.Data.TPMProperties()
	if err != nil || len(props.TPMProperty) == 0 || props.TPMProperty[0].Property != tpm2.TPMPTModes {
		return false, nil
	}
	return props.TPMProperty[0].Value&modeFIPS1402 != 0, nil
}

// FIPS reports whether the TPM runs in FIPS 140-2 mode (TPM_PT_MODES, read
// at Open). Such a TPM refuses raw RSA, so RSA keys sign with TPM2_Sign
// (RSASSA, or RSAPSS, whose salt is then the hash length).
func (d *Device) FIPS() bool { return d.crypto.fips }

// HasHash reports whether the TPM implements hash h (TPM_CAP_ALGS, read at
// Open). brokerd never names a hash the TPM lacks in a command.
func (d *Device) HasHash(h tpm2.TPMIAlgHash) bool { return d.crypto.hashes[h] }

// Supports reports whether the TPM is known to hold keys of the given
// algorithm. False also when a probe could not tell: CheckSupport asks
// again and says which.
func (d *Device) Supports(alg Algorithm) bool {
	known, err := d.supportOf(alg)
	return known && err == nil
}

// CheckSupport reports whether the TPM holds keys of the given algorithm:
// nil when it does, an error matching ErrUnsupported when it does not
// (TPM2_TestParms refused the parameters, or the TPM lacks the hash that
// an ECDSA signature with such a key names), and another error when the
// TPM cannot tell now (ErrFailureMode, ErrUnavailable, a TPM still
// testing itself): then nothing should be decided from it. An unknown
// answer from Open's probe is asked again here.
func (d *Device) CheckSupport(ctx context.Context, alg Algorithm) error {
	if known, err := d.supportOf(alg); known {
		return err
	}
	return d.doChecked(ctx, ClassAPI, func() error { return d.testParms(alg) })
}

// supportOf returns the kept verdict for alg, if there is one.
func (d *Device) supportOf(alg Algorithm) (bool, error) {
	d.crypto.mu.Lock()
	defer d.crypto.mu.Unlock()
	err, ok := d.crypto.support[alg]
	return ok, err
}

// testParmsTries bounds TestParms' retries of warning codes (RETRY,
// YIELDED, TESTING: the TPM asks to be asked again).
const testParmsTries = 3

// testParms asks the TPM whether it holds keys of alg, and keeps a
// definite answer. Token holder only.
func (d *Device) testParms(alg Algorithm) error {
	var err error
	for try := range testParmsTries {
		if try > 0 {
			time.Sleep(time.Duration(try) * 20 * time.Millisecond) // a TPM testing itself needs a moment
		}
		_, err = tpm2.TestParms{Parameters: testParms(alg)}.Execute(d.tr)
		var rc tpm2.TPMRC
		if err == nil || !errors.As(err, &rc) || !rc.IsWarning() {
			break
		}
	}
	err = d.supportVerdict(alg, err)
	if err == nil || errors.Is(err, ErrUnsupported) {
		d.crypto.mu.Lock()
		d.crypto.support[alg] = err
		d.crypto.mu.Unlock()
	}
	return err
}

// supportVerdict turns TestParms' answer for alg into CheckSupport's.
// Token holder only.
func (d *Device) supportVerdict(alg Algorithm, err error) error {
	var f tpm2.TPMFmt1Error
	switch {
	case err == nil && alg == P521:
		// TPMs that hold P-521 keys take no 66-byte digest: brokerd seals
		// such keys instead of signing with them in the TPM.
		return fmt.Errorf("%s keys are %w for signing: no TPM hash gives the curve's 521-bit digest", alg, ErrUnsupported)
	case err == nil:
		if h, ok := ecdsaHash(alg); ok && !d.HasHash(h) {
			return fmt.Errorf("%s keys are %w: it lacks %s, the hash their signatures need", alg, ErrUnsupported, hashName(h))
		}
		return nil
	case errors.As(err, &f):
		// A format-1 code names the parameter the TPM refuses: the key
		// size, the curve, the scheme it does not implement.
		return fmt.Errorf("%s keys are %w (TPM2_TestParms: %w)", alg, ErrUnsupported, err)
	case errors.Is(err, ErrUnavailable):
		return err
	}
	return fmt.Errorf("cannot tell whether the TPM holds %s keys: %w", alg, d.failure(err))
}
