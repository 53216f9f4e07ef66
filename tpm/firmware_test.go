package tpm_test

import (
	"strings"
	"testing"

	"github.com/brokerd/brokerd/tpm"
)

// TestFirmwareAdvisories: the advisories' version ranges, at their edges.
func TestFirmwareAdvisories(t *testing.T) {
	for _, tc := range []struct {
		maker    string
		version  [4]uint16
		want     string // advisory name and CVE, "" for none
		evidence string
	}{
		{"IFX", [4]uint16{7, 40, 0, 0}, "ROCA CVE-2017-15361", "7.0–7.61"},
		{"IFX", [4]uint16{7, 61, 0, 0}, "ROCA CVE-2017-15361", "7.0–7.61"},
		{"IFX", [4]uint16{7, 62, 0, 0}, "", ""},
		{"IFX", [4]uint16{7, 85, 4555, 0}, "", ""}, // an up-to-date SLB9670
		{"IFX", [4]uint16{5, 61, 0, 0}, "ROCA CVE-2017-15361", "5.0–5.61"},
		{"IFX", [4]uint16{5, 62, 0, 0}, "", ""},
		{"IFX", [4]uint16{4, 33, 0, 0}, "ROCA CVE-2017-15361", "4.0–4.33"},
		{"IFX", [4]uint16{4, 34, 0, 0}, "", ""},
		{"IFX", [4]uint16{4, 41, 0, 0}, "ROCA CVE-2017-15361", "4.40–4.42"},
		{"IFX", [4]uint16{4, 43, 0, 0}, "", ""},
		{"IFX", [4]uint16{133, 32, 0, 0}, "ROCA CVE-2017-15361", "133.0–133.32"},
		{"IFX", [4]uint16{133, 33, 0, 0}, "", ""},
		{"NTC", [4]uint16{7, 2, 0, 0}, "", ""}, // the version alone says nothing of another maker
		{"STM", [4]uint16{73, 4, 0, 0}, "TPM-FAIL CVE-2019-16863", "fixed in 73.20"},
		{"STM", [4]uint16{73, 8, 0, 0}, "TPM-FAIL CVE-2019-16863", "fixed in 73.64"},
		{"STM", [4]uint16{74, 16, 0, 0}, "TPM-FAIL CVE-2019-16863", "fixed in 74.64"},
		{"STM", [4]uint16{73, 20, 0, 0}, "", ""},
		{"STM", [4]uint16{73, 6, 0, 0}, "", ""}, // not in ST's table
		{"INTC", [4]uint16{11, 8, 50, 3399}, "TPM-FAIL CVE-2019-11090", "fix 11.8.70"},
		{"INTC", [4]uint16{11, 8, 70, 0}, "", ""},
		{"INTC", [4]uint16{11, 0, 0, 0}, "TPM-FAIL CVE-2019-11090", "fix 11.8.70"},
		{"INTC", [4]uint16{11, 22, 69, 0}, "TPM-FAIL CVE-2019-11090", "fix 11.22.70"},
		{"INTC", [4]uint16{12, 0, 44, 0}, "TPM-FAIL CVE-2019-11090", "fix 12.0.45"},
		{"INTC", [4]uint16{12, 0, 45, 0}, "", ""},
		{"INTC", [4]uint16{13, 0, 5, 0}, "", ""},
		{"INTC", [4]uint16{14, 0, 9, 0}, "TPM-FAIL CVE-2019-11090", "fix 14.0.10"},
		{"INTC", [4]uint16{3, 1, 69, 0}, "TPM-FAIL CVE-2019-11090", "fix 3.1.70"},
		{"INTC", [4]uint16{15, 0, 0, 0}, "", ""},
		{"IBM", [4]uint16{8217, 4131, 22, 13878}, "", ""}, // swtpm
	} {
		f := tpm.Firmware{Manufacturer: tc.maker, Version: tc.version}
		adv := f.Advisories()
		var got string
		if len(adv) > 0 {
			got = adv[0].Name + " " + adv[0].CVE
		}
		if got != tc.want || len(adv) > 1 {
			t.Errorf("%s %s: %v, want %q", tc.maker, f, adv, tc.want)
			continue
		}
		if len(adv) == 1 && (!strings.Contains(adv[0].Evidence, tc.evidence) || adv[0].Advice == "") {
			t.Errorf("%s %s: evidence %q, advice %q: want evidence naming %q and advice", tc.maker, f, adv[0].Evidence, adv[0].Advice, tc.evidence)
		}
	}
}

// TestFirmwareOf: the raw properties as an SLB9670, an ST33 and Intel PTT
// report them.
func TestFirmwareOf(t *testing.T) {
	for _, tc := range []struct {
		manufacturer, v1, v2 uint32
		maker, name, version string
	}{
		{0x49465800, 0x00070055, 0x11CB0000, "IFX", "Infineon", "7.85.4555.0"},
		{0x53544D20, 0x00490004, 0x44A01164, "STM", "STMicroelectronics", "73.4.17568.4452"},
		{0x494E5443, 0x000B0008, 0x00320D47, "INTC", "Intel", "11.8.50.3399"},
	} {
		f := tpm.FirmwareOf(tc.manufacturer, tc.v1, tc.v2)
		if f.Manufacturer != tc.maker || f.ManufacturerName() != tc.name || f.String() != tc.version {
			t.Errorf("%08x %08x %08x: %q %q %s, want %q %q %s", tc.manufacturer, tc.v1, tc.v2,
				f.Manufacturer, f.ManufacturerName(), f, tc.maker, tc.name, tc.version)
		}
	}
}
