package tpm

import (
	"fmt"
	"strings"
)

// Firmware names a TPM's maker and firmware as the TPM reports them
// (TPM_PT_MANUFACTURER, TPM_PT_FIRMWARE_VERSION_1 and _2).
type Firmware struct {
	// Manufacturer is the TCG vendor ID, four ASCII characters with
	// trailing spaces and NULs removed: "IFX", "INTC", "STM", "NTC",
	// "IBM" (swtpm), ...
	Manufacturer string `json:"manufacturer"`
	// Version is the firmware version as four 16-bit numbers: the high
	// and low halves of FIRMWARE_VERSION_1, then of FIRMWARE_VERSION_2.
	// Vendors' own tools print it this way (an Infineon SLB9670 with
	// firmware 7.85, an Intel PTT with its CSME version 11.8.50.3399);
	// Windows' tpm.msc shows the first two ("ManufacturerVersion"), which
	// is what Infineon's and ST's advisories quote.
	Version [4]uint16 `json:"version"`
}

// FirmwareOf decodes the raw properties.
func FirmwareOf(manufacturer, version1, version2 uint32) Firmware {
	return Firmware{
		Manufacturer: vendorID(manufacturer),
		Version:      [4]uint16{uint16(version1 >> 16), uint16(version1), uint16(version2 >> 16), uint16(version2)},
	}
}

// vendorID turns a TPM_PT_MANUFACTURER value into its four characters.
func vendorID(v uint32) string {
	b := []byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
	return strings.TrimRight(string(b), " \x00")
}

// String is the version, e.g. "7.85.4555.0".
func (f Firmware) String() string {
	v := f.Version
	return fmt.Sprintf("%d.%d.%d.%d", v[0], v[1], v[2], v[3])
}

// ManufacturerName is the maker's name from the TCG Vendor ID Registry,
// or the vendor ID itself when brokerd does not know it.
func (f Firmware) ManufacturerName() string {
	if n, ok := manufacturers[f.Manufacturer]; ok {
		return n
	}
	return f.Manufacturer
}

// manufacturers are TCG vendor IDs (TCG Vendor ID Registry) of TPMs one
// meets on servers, PCs and single-board computers.
var manufacturers = map[string]string{
	"AMD":  "AMD",
	"ATML": "Atmel",
	"BRCM": "Broadcom",
	"CSCO": "Cisco",
	"GOOG": "Google",
	"HPE":  "Hewlett Packard Enterprise",
	"IBM":  "IBM (also swtpm)",
	"IFX":  "Infineon",
	"INTC": "Intel",
	"LEN":  "Lenovo",
	"MSFT": "Microsoft",
	"NSM":  "National Semiconductor",
	"NTC":  "Nuvoton",
	"NTZ":  "Nationz",
	"QCOM": "Qualcomm",
	"ROCC": "Fuzhou Rockchip",
	"SMSC": "SMSC",
	"SMSN": "Samsung",
	"SNS":  "Sinosun",
	"STM":  "STMicroelectronics",
	"TXN":  "Texas Instruments",
	"WEC":  "Winbond",
}

// Advisory is a known weakness of a TPM's firmware, and what to do.
type Advisory struct {
	// Name is the weakness's short name: "ROCA", "TPM-FAIL".
	Name string `json:"name"`
	// CVE is its identifier.
	CVE string `json:"cve"`
	// Problem says what it breaks on this TPM.
	Problem string `json:"problem"`
	// Advice says what to do.
	Advice string `json:"advice"`
	// Evidence says why brokerd thinks this TPM has it: its firmware
	// version, or a key of its that has the fingerprint.
	Evidence string `json:"evidence"`
}

// minor is a major.minor firmware version (what the advisories quote).
type minor struct{ major, minor uint16 }

// between reports whether f's major.minor version lies in [lo, hi].
func (f Firmware) between(lo, hi minor) bool {
	v := minor{f.Version[0], f.Version[1]}
	after := v.major > lo.major || (v.major == lo.major && v.minor >= lo.minor)
	before := v.major < hi.major || (v.major == hi.major && v.minor <= hi.minor)
	return after && before
}

// rocaFirmware lists the Infineon firmware versions whose RSA key
// generation has the ROCA flaw (CVE-2017-15361), as Microsoft's advisory
// ADV170012 (October 2017) lists the affected "ManufacturerVersion"s of
// Infineon TPMs (IFX): 4.33 and earlier, 4.40 to 4.42, 5.61 and earlier,
// 6.42 and earlier, 7.61 and earlier, 133.32 and earlier; each "and
// earlier" within its major version. Infineon's TPM update page
// (infineon.com/TPM-update) has the fixed versions (e.g. 7.62/7.63 for
// the 7.x TPM 2.0 line of the SLB9670). 4.x and 6.x are TPM 1.2 lines,
// which brokerd cannot use; they are listed for completeness.
var rocaFirmware = [][2]minor{
	{{4, 0}, {4, 33}},
	{{4, 40}, {4, 42}},
	{{5, 0}, {5, 61}},
	{{6, 0}, {6, 42}},
	{{7, 0}, {7, 61}},
	{{133, 0}, {133, 32}},
}

// tpmFailST lists the STMicroelectronics firmware versions whose ECDSA
// signing leaks the nonce's length through its timing (TPM-FAIL,
// CVE-2019-16863: Moghimi, Sunar, Eisenbarth and Heninger, "TPM-FAIL: TPM
// meets Timing and Lattice Attacks", USENIX Security 2020). ST's own table
// (st.com, "Information on ST's TPM firmware update – ECDSA signature
// generation") lists exactly these as affected, with the fix for each:
// ST33TPHF2ESPI 71.0, 71.4, 71.12 (fixed in 71.16), 73.0, 73.4 (73.20),
// 73.8 (73.64); ST33TPHF2EI2C 73.5 (73.21), 73.9 (73.65); ST33TPHF20SPI
// 74.0, 74.4 (74.20), 74.8, 74.16 (74.64); ST33TPHF20I2C 74.5 (74.21), 74.9
// (74.65). "The TPM products and firmware not listed are not affected."
var tpmFailST = map[minor]string{
	{71, 0}: "71.16", {71, 4}: "71.16", {71, 12}: "71.16",
	{73, 0}: "73.20", {73, 4}: "73.20", {73, 8}: "73.64",
	{73, 5}: "73.21", {73, 9}: "73.65",
	{74, 0}: "74.20", {74, 4}: "74.20", {74, 8}: "74.64", {74, 16}: "74.64",
	{74, 5}: "74.21", {74, 9}: "74.65",
}

// tpmFailIntel lists the Intel PTT (firmware TPM in the CSME or TXE)
// versions with the same timing leak (TPM-FAIL, CVE-2019-11090), as Intel's
// advisory INTEL-SA-00241 (November 2019) and the CVE's NVD entry give
// them: Intel PTT before 11.8.70, 11.11.70, 11.22.70, 12.0.45 and 14.0.10
// in the CSME lines 11.0–11.8, 11.10–11.11, 11.20–11.22, 12.0 and 14.0;
// Intel TXE before 3.1.70 and 4.0.20. (The advisory names 13.0.0 as the
// fixed 13.x version: no 13.x release is affected. Intel SPS, the server
// firmware, numbers its versions otherwise and is not matched.) Intel PTT
// reports its CSME/TXE version as its firmware version; each range is
// [from, to) on the first three numbers.
var tpmFailIntel = [][2][3]uint16{
	{{11, 0, 0}, {11, 8, 70}},
	{{11, 10, 0}, {11, 11, 70}},
	{{11, 20, 0}, {11, 22, 70}},
	{{12, 0, 0}, {12, 0, 45}},
	{{14, 0, 0}, {14, 0, 10}},
	{{3, 0, 0}, {3, 1, 70}},
	{{4, 0, 0}, {4, 0, 20}},
}

// less compares three-number versions.
func less(a, b [3]uint16) bool {
	for i := range a {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return false
}

// Advisories returns the known weaknesses of this firmware, with what to
// do about each. An empty result means none that brokerd knows of.
func (f Firmware) Advisories() []Advisory {
	var out []Advisory
	switch f.Manufacturer {
	case "IFX":
		for _, r := range rocaFirmware {
			if f.between(r[0], r[1]) {
				out = append(out, ROCAAdvisory(fmt.Sprintf("Infineon firmware %d.%d is in the range %d.%d–%d.%d that Microsoft's ADV170012 lists",
					f.Version[0], f.Version[1], r[0].major, r[0].minor, r[1].major, r[1].minor)))
			}
		}
	case "STM":
		if fixed, ok := tpmFailST[minor{f.Version[0], f.Version[1]}]; ok {
			out = append(out, tpmFail("CVE-2019-16863", fmt.Sprintf("STMicroelectronics firmware %d.%d is listed as affected by ST (fixed in %s)",
				f.Version[0], f.Version[1], fixed), "update the TPM firmware to "+fixed+" or later (from the board's maker)"))
		}
	case "INTC":
		v := [3]uint16{f.Version[0], f.Version[1], f.Version[2]}
		for _, r := range tpmFailIntel {
			if !less(v, r[0]) && less(v, r[1]) {
				out = append(out, tpmFail("CVE-2019-11090", fmt.Sprintf("Intel PTT firmware %d.%d.%d is before the fix %d.%d.%d of INTEL-SA-00241",
					v[0], v[1], v[2], r[1][0], r[1][1], r[1][2]), "update the system firmware (BIOS/UEFI with the CSME update of INTEL-SA-00241)"))
			}
		}
	}
	return out
}

// ROCAAdvisory is the advisory for ROCA, with the evidence found.
func ROCAAdvisory(evidence string) Advisory {
	return Advisory{
		Name: "ROCA",
		CVE:  "CVE-2017-15361",
		Problem: "RSA keys this TPM generates can be factored from their public key (Infineon RSALib); " +
			"an RSA endorsement key is affected too, so blobs wrapped for it protect nothing",
		Advice: "update the TPM firmware (Infineon's TPM update, through the board's maker); until then use P-256 or P-384 keys, " +
			"or RSA keys made outside this TPM (brokerd key import), and wrap keys for the ECC endorsement key; " +
			"brokerd refuses TPM-generated RSA keys with the ROCA fingerprint; revoke certificates of RSA keys this TPM made before",
		Evidence: evidence,
	}
}

func tpmFail(cve, evidence, update string) Advisory {
	return Advisory{
		Name: "TPM-FAIL",
		CVE:  cve,
		Problem: "ECDSA signatures leak the nonce's length through their timing: someone who can time a few thousand " +
			"signatures (locally, or over a fast network: a TLS handshake is one) can compute the ECDSA key",
		Advice: update + "; until then prefer RSA keys (TPM-FAIL concerns the elliptic-curve signature schemes) for keys whose " +
			"signing time others can observe (the QWAC in bank handshakes, the API server key), and replace the ECDSA keys this TPM used",
		Evidence: evidence,
	}
}
