package tpm

import (
	"context"
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/google/go-tpm/tpm2"
)

// Info is what a TPM says about itself, for `brokerd tpm info`.
type Info struct {
	Firmware         Firmware `json:"firmware"`
	ManufacturerName string   `json:"manufacturer_name"`
	FirmwareVersion  string   `json:"firmware_version"`
	// VendorString is TPM_PT_VENDOR_STRING_1..4: the chip's own name for
	// itself ("SLB9670", "SW   TPM", ...).
	VendorString string `json:"vendor_string"`
	Spec         Spec   `json:"spec"`
	// Algorithms and Curves are what the TPM implements (TPM_CAP_ALGS,
	// TPM_CAP_ECC_CURVES), by their TCG names.
	Algorithms []string `json:"algorithms"`
	Curves     []string `json:"curves"`
	// KeyTypes says which of brokerd's key algorithms the TPM holds (the
	// others are sealed).
	KeyTypes    map[Algorithm]bool `json:"key_types"`
	PCRBanks    []PCRBank          `json:"pcr_banks"`
	Modes       Modes              `json:"modes"`
	Lockout     Lockout            `json:"lockout"`
	Hierarchies Hierarchies        `json:"hierarchies"`
	// TransientSlots is how many transient objects the TPM can hold now.
	TransientSlots int `json:"transient_slots"`
	// Persistent lists the persistent objects, EKCertificates the EK
	// certificates in NV memory.
	Persistent     []Handle   `json:"persistent_handles"`
	EKCertificates []Handle   `json:"ek_certificates"`
	Rates          []Rate     `json:"rates,omitempty"`
	Advisories     []Advisory `json:"advisories"`
}

// Spec is the TPM library specification the TPM implements.
type Spec struct {
	Family string `json:"family"` // "2.0"
	Level  uint32 `json:"level"`
	// Revision is TPM_PT_REVISION as the spec prints it: 159 is "1.59".
	Revision  string `json:"revision"`
	Year      uint32 `json:"year"`
	DayOfYear uint32 `json:"day_of_year"`
}

// PCRBank is one hash algorithm's bank of PCRs; Active when PCRs are
// allocated in it.
type PCRBank struct {
	Hash   string `json:"hash"`
	Active bool   `json:"active"`
	PCRs   int    `json:"pcrs"`
}

// Modes is TPM_PT_MODES: whether the TPM runs in a FIPS 140 mode, where
// it may refuse raw RSA (TPM2_RSA_Decrypt with scheme NULL).
type Modes struct {
	FIPS1402 bool   `json:"fips_140_2"`
	Raw      uint32 `json:"raw"`
}

// Lockout is the dictionary-attack state: failed authorizations counted
// against the TPM's limit (brokerd's keys are exempt: noDA).
type Lockout struct {
	Counter  uint32 `json:"counter"`
	MaxTries uint32 `json:"max_tries"`
	// IntervalSeconds forgets one failure; RecoverySeconds is the wait
	// after a failed use of the lockout hierarchy itself.
	IntervalSeconds uint32 `json:"interval_s"`
	RecoverySeconds uint32 `json:"recovery_s"`
	InLockout       bool   `json:"in_lockout"`
	// AuthSet says whether the lockout hierarchy has an auth value.
	// Without one, anyone who may use the TPM device can clear the TPM
	// (TPM2_Clear), which destroys every key brokerd keeps in it.
	AuthSet bool `json:"lockout_auth_set"`
}

// Hierarchies is what TPMA_PERMANENT and TPMA_STARTUP_CLEAR say of the
// TPM's hierarchies.
type Hierarchies struct {
	OwnerAuthSet       bool `json:"owner_auth_set"`
	EndorsementAuthSet bool `json:"endorsement_auth_set"`
	// PlatformEnabled: the platform hierarchy is usable. Firmware that
	// owns it (a PC's UEFI) disables it or sets its auth before the OS
	// starts; where no firmware does (a Raspberry Pi), it stays enabled
	// with an empty auth, and anyone who may use the TPM can clear it.
	PlatformEnabled bool `json:"platform_enabled"`
	// ClearDisabled: TPM2_Clear is refused until the platform enables it.
	ClearDisabled bool `json:"clear_disabled"`
}

// Handle is a persistent object or NV index, and what it is.
type Handle struct {
	Handle string `json:"handle"`
	What   string `json:"what"`
}

// TPMA_PERMANENT, TPMA_STARTUP_CLEAR and TPMA_MODES bits (TPM 2.0 Part 2).
const (
	permOwnerAuthSet       = 1 << 0
	permEndorsementAuthSet = 1 << 1
	permLockoutAuthSet     = 1 << 2
	permDisableClear       = 1 << 8
	permInLockout          = 1 << 9
	startupPHEnable        = 1 << 0
	modesFIPS1402          = 1 << 0
)

// Info reads what the TPM says about itself and, with opts.Rates,
// measures its signing rates (see MeasureRates). Reading is a few dozen
// short commands; it creates no key.
func (d *Device) Info(ctx context.Context, opts InfoOptions) (*Info, error) {
	info := &Info{KeyTypes: map[Algorithm]bool{}}
	for _, a := range Algorithms {
		info.KeyTypes[a] = d.Supports(a)
	}
	err := d.do(ctx, func() error {
		for _, read := range []func(*Info) error{d.readProperties, d.readAlgorithms, d.readPCRBanks, d.readHandles} {
			if err := read(info); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("tpm: info: %w", err)
	}
	if opts.Rates {
		if info.Rates, err = d.MeasureRates(ctx, opts.RateTime, opts.TotalTime); err != nil {
			return nil, fmt.Errorf("tpm: info: %w", err)
		}
	}
	return info, nil
}

// Advisories returns the known weaknesses of the TPM's firmware (see
// Firmware.Advisories): cheap, for start-up and `config check`.
func (d *Device) Advisories(ctx context.Context) ([]Advisory, error) {
	var f Firmware
	err := d.do(ctx, func() error {
		p, err := d.properties(tpm2.TPMPTManufacturer, 8)
		f = FirmwareOf(p[tpm2.TPMPTManufacturer], p[tpm2.TPMPTFirmwareVersion1], p[tpm2.TPMPTFirmwareVersion2])
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("tpm: read firmware version: %w", err)
	}
	return f.Advisories(), nil
}

// properties reads count TPM properties from first on. Token holder only.
func (d *Device) properties(first tpm2.TPMPT, count uint32) (map[tpm2.TPMPT]uint32, error) {
	out := map[tpm2.TPMPT]uint32{}
	next, end := uint32(first), uint32(first)+count
	for next < end {
		rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapTPMProperties, Property: next, PropertyCount: end - next}.Execute(d.tr)
		if err != nil {
			return out, fmt.Errorf("get properties: %w", err)
		}
		props, err := rsp.CapabilityData.Data.TPMProperties()
		if err != nil {
			return out, fmt.Errorf("get properties: %w", err)
		}
		for _, p := range props.TPMProperty {
			out[p.Property] = p.Value
		}
		if !rsp.MoreData || len(props.TPMProperty) == 0 {
			break
		}
		next = uint32(props.TPMProperty[len(props.TPMProperty)-1].Property) + 1
	}
	return out, nil
}

// readProperties fills in what the fixed and variable properties say.
func (d *Device) readProperties(info *Info) error {
	fixed, err := d.properties(tpm2.TPMPTFamilyIndicator, 0x40)
	if err != nil {
		return err
	}
	vars, err := d.properties(tpm2.TPMPTPermanent, 0x20)
	if err != nil {
		return err
	}
	info.Firmware = FirmwareOf(fixed[tpm2.TPMPTManufacturer], fixed[tpm2.TPMPTFirmwareVersion1], fixed[tpm2.TPMPTFirmwareVersion2])
	info.ManufacturerName, info.FirmwareVersion = info.Firmware.ManufacturerName(), info.Firmware.String()
	var vendor []byte
	for _, pt := range []tpm2.TPMPT{tpm2.TPMPTVendorString1, tpm2.TPMPTVendorString2, tpm2.TPMPTVendorString3, tpm2.TPMPTVendorString4} {
		vendor = binary.BigEndian.AppendUint32(vendor, fixed[pt])
	}
	info.VendorString = strings.TrimSpace(strings.ReplaceAll(string(vendor), "\x00", ""))
	rev := fixed[tpm2.TPMPTRevision]
	info.Spec = Spec{Family: strings.TrimRight(vendorID(fixed[tpm2.TPMPTFamilyIndicator]), " "), Level: fixed[tpm2.TPMPTLevel],
		Revision: fmt.Sprintf("%d.%02d", rev/100, rev%100), Year: fixed[tpm2.TPMPTYear], DayOfYear: fixed[tpm2.TPMPTDayofYear]}
	info.Modes = Modes{FIPS1402: fixed[tpm2.TPMPTModes]&modesFIPS1402 != 0, Raw: fixed[tpm2.TPMPTModes]}
	perm, startup := vars[tpm2.TPMPTPermanent], vars[tpm2.TPMPTStartupClear]
	info.Lockout = Lockout{Counter: vars[tpm2.TPMPTLockoutCounter], MaxTries: vars[tpm2.TPMPTMaxAuthFail],
		IntervalSeconds: vars[tpm2.TPMPTLockoutInterval], RecoverySeconds: vars[tpm2.TPMPTLockoutRecovery],
		InLockout: perm&permInLockout != 0, AuthSet: perm&permLockoutAuthSet != 0}
	info.Hierarchies = Hierarchies{OwnerAuthSet: perm&permOwnerAuthSet != 0, EndorsementAuthSet: perm&permEndorsementAuthSet != 0,
		PlatformEnabled: startup&startupPHEnable != 0, ClearDisabled: perm&permDisableClear != 0}
	info.TransientSlots = int(vars[tpm2.TPMPTHRTransientAvail])
	info.Advisories = info.Firmware.Advisories()
	return nil
}

// readAlgorithms lists the algorithms and curves.
func (d *Device) readAlgorithms(info *Info) error {
	rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapAlgs, Property: 0, PropertyCount: 128}.Execute(d.tr)
	if err != nil {
		return fmt.Errorf("get algorithms: %w", err)
	}
	algs, err := rsp.CapabilityData.Data.Algorithms()
	if err != nil {
		return fmt.Errorf("get algorithms: %w", err)
	}
	info.Algorithms = []string{}
	for _, a := range algs.AlgProperties {
		info.Algorithms = append(info.Algorithms, algName(a.Alg))
	}
	rsp, err = tpm2.GetCapability{Capability: tpm2.TPMCapECCCurves, Property: 0, PropertyCount: 64}.Execute(d.tr)
	if err != nil {
		return fmt.Errorf("get curves: %w", err)
	}
	curves, err := rsp.CapabilityData.Data.ECCCurves()
	if err != nil {
		return fmt.Errorf("get curves: %w", err)
	}
	info.Curves = []string{}
	for _, c := range curves.ECCCurves {
		info.Curves = append(info.Curves, curveName(c))
	}
	return nil
}

// readPCRBanks lists the PCR banks and whether each is active.
func (d *Device) readPCRBanks(info *Info) error {
	rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapPCRs, Property: 0, PropertyCount: 16}.Execute(d.tr)
	if err != nil {
		return fmt.Errorf("get PCR banks: %w", err)
	}
	sel, err := rsp.CapabilityData.Data.AssignedPCR()
	if err != nil {
		return fmt.Errorf("get PCR banks: %w", err)
	}
	info.PCRBanks = []PCRBank{}
	for _, s := range sel.PCRSelections {
		n := 0
		for _, b := range s.PCRSelect {
			for ; b != 0; b &= b - 1 {
				n++
			}
		}
		info.PCRBanks = append(info.PCRBanks, PCRBank{Hash: algName(s.Hash), Active: n > 0, PCRs: n})
	}
	return nil
}

// readHandles lists the persistent objects and the EK certificates in NV,
// and checks the RSA endorsement key (persistent, or certified in NV) for
// the ROCA fingerprint.
func (d *Device) readHandles(info *Info) error {
	hs, err := d.handles(tpm2.TPMHTPersistent)
	if err != nil {
		return err
	}
	info.Persistent = []Handle{}
	for _, h := range hs {
		info.Persistent = append(info.Persistent, Handle{Handle: fmt.Sprintf("0x%08x", uint32(h)), What: persistentName(uint32(h))})
		if uint32(h) == persistentRSAEK {
			if pub, err := (tpm2.ReadPublic{ObjectHandle: h}).Execute(d.tr); err == nil {
				d.noteROCA(info, pub.OutPublic, fmt.Sprintf("the RSA endorsement key at 0x%08x", uint32(h)))
			}
		}
	}
	nv, err := d.handles(tpm2.TPMHTNVIndex)
	if err != nil {
		return err
	}
	info.EKCertificates = []Handle{}
	for _, h := range nv {
		name, isCert := ekCertIndices[uint32(h)]
		if !isCert {
			continue
		}
		info.EKCertificates = append(info.EKCertificates, Handle{Handle: fmt.Sprintf("0x%08x", uint32(h)), What: name})
		if strings.HasPrefix(name, "RSA") {
			if c, err := d.readEKCert(uint32(h)); err == nil {
				d.noteROCA(info, c.PublicKey, fmt.Sprintf("the key of the %s in NV index 0x%08x", name, uint32(h)))
			}
		}
	}
	return nil
}

// noteROCA records a ROCA advisory when pub (a public key or a
// TPM2B_PUBLIC) is an RSA key with the fingerprint.
func (d *Device) noteROCA(info *Info, pub any, what string) {
	if b, ok := pub.(tpm2.TPM2BPublic); ok {
		contents, err := b.Contents()
		if err != nil {
			return
		}
		if pub, err = tpm2.Pub(*contents); err != nil {
			return
		}
	}
	if d.rocaCheck(what, pub) == nil {
		return
	}
	evidence := what + " has the ROCA fingerprint"
	for i, a := range info.Advisories {
		if a.Name == "ROCA" {
			info.Advisories[i].Evidence += "; " + evidence
			return
		}
	}
	info.Advisories = append(info.Advisories, ROCAAdvisory(evidence))
}

// Reserved handles and NV indices (TCG EK Credential Profile 2.x, TCG TPM
// v2.0 Provisioning Guidance).
const (
	persistentSRK   = 0x81000001
	persistentRSAEK = 0x81010001
	persistentECCEK = 0x81010002
)

// ekCertIndices are the NV indices where TPM makers store EK certificates.
var ekCertIndices = map[uint32]string{
	RSAEKCertIndex: "RSA-2048 EK certificate",
	ECCEKCertIndex: "ECC P-256 EK certificate",
	0x01C00012:     "RSA-2048 EK certificate (high range)",
	0x01C00014:     "ECC P-256 EK certificate (high range)",
	0x01C00016:     "ECC P-384 EK certificate (high range)",
	0x01C00018:     "ECC P-521 EK certificate (high range)",
	0x01C0001C:     "RSA-3072 EK certificate (high range)",
	0x01C0001E:     "RSA-4096 EK certificate (high range)",
}

func persistentName(h uint32) string {
	switch {
	case h == persistentSRK:
		return "storage root key (the TCG's reserved handle)"
	case h == persistentRSAEK:
		return "RSA endorsement key (the TCG's reserved handle)"
	case h == persistentECCEK:
		return "ECC endorsement key (the TCG's reserved handle)"
	case h < 0x81010000:
		return "owner hierarchy object"
	case h < 0x81800000:
		return "endorsement hierarchy object"
	}
	return "platform hierarchy object"
}
