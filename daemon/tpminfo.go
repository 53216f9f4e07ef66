package daemon

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/brokerd/brokerd/internal/certs"
	"github.com/brokerd/brokerd/store"
	"github.com/brokerd/brokerd/tpm"
)

// metaLockoutAuth is the state's copy of the lockout hierarchy's auth
// value that init set (see GuardLockout).
const metaLockoutAuth = "tpm.lockout_auth"

// TPMReport is what `brokerd tpm info` shows: what the TPM says of itself,
// and whether brokerd keeps its lockout auth.
type TPMReport struct {
	*tpm.Info
	Address string `json:"address"`
	// LockoutAuthKept: the lockout auth value is brokerd's, kept in the
	// state file.
	LockoutAuthKept bool `json:"lockout_auth_kept"`
}

// TPMInfo reads the TPM's description and, when rateTime is positive,
// measures its signing rates, signing for rateTime with each key type.
func (s *State) TPMInfo(ctx context.Context, rateTime time.Duration) (*TPMReport, error) {
	info, err := s.TPM.Info(ctx, tpm.InfoOptions{Rates: rateTime > 0, RateTime: rateTime})
	if err != nil {
		return nil, err
	}
	kept, err := s.Store.Meta(metaLockoutAuth)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	return &TPMReport{Info: info, Address: s.Config.TPM.Address, LockoutAuthKept: len(kept) > 0}, nil
}

// WriteText prints the report for a person.
func (r *TPMReport) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t%s\n", k, fmt.Sprintf(format, args...)) }
	i := r.Info
	row("tpm", "%s", r.Address)
	row("manufacturer", "%s (%s), %q", i.ManufacturerName, i.Firmware.Manufacturer, i.VendorString)
	row("firmware", "%s", i.FirmwareVersion)
	row("specification", "TPM %s, level %d, revision %s (%d, day %d)", i.Spec.Family, i.Spec.Level, i.Spec.Revision, i.Spec.Year, i.Spec.DayOfYear)
	row("key types held", "%s", keyTypes(i.KeyTypes))
	row("algorithms", "%s", strings.Join(i.Algorithms, " "))
	row("curves", "%s", strings.Join(i.Curves, " "))
	row("PCR banks", "%s", pcrBanks(i.PCRBanks))
	row("FIPS 140-2 mode", "%s", yesNo(i.Modes.FIPS1402, "yes: the TPM may refuse raw RSA", "no"))
	r.writeLockout(row)
	row("persistent handles", "%s", handles(i.Persistent))
	row("EK certificates", "%s", handles(i.EKCertificates))
	for _, rate := range i.Rates {
		if rate.Skipped != "" {
			row("rate "+string(rate.Algorithm), "not measured: %s", rate.Skipped)
			continue
		}
		row("rate "+string(rate.Algorithm), "%.1f signatures/s (median %.1f ms, %d signatures)", rate.PerSecond, rate.MedianMS, rate.Signatures)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, a := range i.Advisories {
		fmt.Fprintf(w, "\nWARNING: %s (%s): %s.\n  why: %s.\n  what to do: %s.\n", a.Name, a.CVE, a.Problem, a.Evidence, a.Advice)
	}
	if len(i.Advisories) == 0 {
		fmt.Fprintln(w, "\nknown-bad firmware: none known for this maker and version (ROCA, TPM-FAIL)")
	}
	return nil
}

// writeLockout prints the dictionary-attack and hierarchy state.
func (r *TPMReport) writeLockout(row func(k, format string, args ...any)) {
	l, h := r.Lockout, r.Hierarchies
	row("lockout", "%d of %d failed authorizations counted, one forgotten every %ds; %s", l.Counter, l.MaxTries, l.IntervalSeconds,
		yesNo(l.InLockout, "IN LOCKOUT", "not in lockout"))
	auth := "not set: anyone who may use the TPM device can clear the TPM (and with it every key brokerd keeps there)"
	switch {
	case l.AuthSet && r.LockoutAuthKept:
		auth = "set by brokerd init, kept in the state file"
	case l.AuthSet:
		auth = "set, not by brokerd (brokerd does not know it)"
	}
	row("lockout auth", "%s; %ds to wait after a wrong one", auth, l.RecoverySeconds)
	row("hierarchies", "owner auth %s, endorsement auth %s, platform hierarchy %s%s", yesNo(h.OwnerAuthSet, "set", "empty"),
		yesNo(h.EndorsementAuthSet, "set", "empty"),
		yesNo(h.PlatformEnabled, "enabled (no firmware claimed it: anyone who may use the TPM can clear it with the platform hierarchy)", "disabled by the firmware"),
		yesNo(h.ClearDisabled, "; TPM2_Clear disabled", ""))
}

func yesNo(b bool, yes, no string) string {
	if b {
		return yes
	}
	return no
}

func keyTypes(m map[tpm.Algorithm]bool) string {
	var held, not []string
	for _, a := range tpm.Algorithms {
		if m[a] {
			held = append(held, string(a))
		} else {
			not = append(not, string(a))
		}
	}
	s := strings.Join(held, " ")
	if len(not) > 0 {
		s += " (sealed instead: " + strings.Join(not, " ") + ")"
	}
	return s
}

func pcrBanks(banks []tpm.PCRBank) string {
	var out []string
	for _, b := range banks {
		out = append(out, b.Hash+yesNo(b.Active, fmt.Sprintf(" (%d PCRs)", b.PCRs), " (inactive)"))
	}
	return strings.Join(out, ", ")
}

func handles(hs []tpm.Handle) string {
	if len(hs) == 0 {
		return "none"
	}
	var out []string
	for _, h := range hs {
		out = append(out, h.Handle+" "+h.What)
	}
	return strings.Join(out, "; ")
}

// guardLockout gives the TPM's lockout hierarchy a random auth value kept
// in the state, when it has none (see tpm.Device.GuardLockout). It only
// warns when it cannot: brokerd works without it.
func (s *State) guardLockout(ctx context.Context, log *slog.Logger) {
	set, err := s.TPM.GuardLockout(ctx, func(auth []byte) error { return s.Store.SetMeta(metaLockoutAuth, auth) })
	switch {
	case err != nil && !errors.Is(err, tpm.ErrUnavailable):
		s.Store.SetMeta(metaLockoutAuth, nil) // the TPM refused it: the value is not the lockout auth
		fallthrough
	case err != nil:
		log.Warn("tpm: the lockout hierarchy keeps an empty auth value: anyone who may use the TPM device can clear the TPM", "err", err)
	case !set:
		log.Warn("tpm: the lockout hierarchy has an auth value already, not brokerd's: brokerd leaves it as it is")
	}
}

// warnFirmware logs the known weaknesses of the TPM's firmware.
func (s *State) warnFirmware(ctx context.Context, log *slog.Logger) {
	adv, err := s.TPM.Advisories(ctx)
	if err != nil {
		log.Warn("tpm: cannot read the firmware version", "err", err)
	}
	for _, a := range adv {
		log.Warn(fmt.Sprintf("tpm: known-bad firmware: %s (%s): %s; what to do: %s", a.Name, a.CVE, a.Problem, a.Advice), "why", a.Evidence)
	}
}

// WrapTarget returns the endorsement public key to wrap a key for: the one
// in ekFile, or the one certFile (the TPM's EK certificate, PEM or DER)
// certifies once it is verified against the vendor's CAs in vendorFile;
// with both, they must be the same key. read reads the files. It also
// says, for a person, what was checked.
func WrapTarget(read func(string) ([]byte, error), ekFile, certFile, vendorFile string, now time.Time) (crypto.PublicKey, string, error) {
	var ek crypto.PublicKey
	if ekFile != "" {
		data, err := read(ekFile)
		if err == nil {
			ek, err = certs.ParsePublicKey(data)
		}
		if err != nil {
			return nil, "", fmt.Errorf("%s: %w", ekFile, err)
		}
	}
	if certFile == "" {
		return ek, "the endorsement key in " + ekFile + " (not checked against an EK certificate)", nil
	}
	cert, vendor, err := readEKCertAndVendor(read, certFile, vendorFile)
	if err != nil {
		return nil, "", err
	}
	certified, err := tpm.VerifyEKCertificate(cert, vendor, now)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", certFile, err)
	}
	if ek != nil && !publicKeyEqual(ek, certified) {
		return nil, "", fmt.Errorf("the endorsement key in %s is not the one %s certifies", ekFile, certFile)
	}
	return certified, fmt.Sprintf("the endorsement key certified by %q (verified against %s)", cert.Issuer.String(), vendorFile), nil
}

func readEKCertAndVendor(read func(string) ([]byte, error), certFile, vendorFile string) (*x509.Certificate, []*x509.Certificate, error) {
	data, err := read(certFile)
	if err != nil {
		return nil, nil, err
	}
	cert, err := tpm.ParseEKCertificate(data)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", certFile, err)
	}
	vendor, err := certs.ReadFiles(read, vendorFile)
	if err != nil {
		return nil, nil, err
	}
	return cert, vendor, nil
}

func publicKeyEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}
