package tpm

import "fmt"

// pcrMeaning says what is measured into each PCR of a PC-client TPM (TCG
// PC Client Platform Firmware Profile, and the Linux TPM PCR Registry of
// the UAPI group for PCRs 8 to 15), and so what changes it.
var pcrMeaning = map[int]string{
	0:  "firmware code: changes with every firmware (BIOS/UEFI) update",
	1:  "firmware settings and hardware: changes with setup changes and some hardware changes (CPU, memory)",
	2:  "option ROMs: changes when an expansion card or its firmware changes",
	3:  "option ROM settings: changes with expansion card configuration",
	4:  "boot loader: changes with every shim, GRUB or systemd-boot update (and every kernel update with a unified kernel image)",
	5:  "partition table and boot variables: changes with partitioning and boot order changes",
	6:  "platform events: changes with resume from hibernation and vendor events",
	7:  "Secure Boot state: changes with Secure Boot db/dbx updates (firmware updates and fwupd ship them), with Secure Boot turned on or off, and with new boot loader certificates",
	8:  "boot loader commands and kernel command line (GRUB): changes with boot menu and command line changes",
	9:  "files the boot loader read (GRUB), the initrd (systemd-stub): changes with every kernel or initrd update",
	10: "IMA: changes on every boot as programs run; a key sealed to it will not unseal after a reboot",
	11: "unified kernel image: changes with every kernel update",
	12: "kernel command line and credentials (systemd-stub): changes with either",
	13: "system extension images (systemd-stub): changes with them",
	14: "shim's MOK certificates: changes when MOK keys are enrolled",
	15: "system identity (systemd: machine ID, volume keys): changes with them",
	16: "debug PCR: any program with access to the TPM can extend it",
	23: "application PCR: any program with access to the TPM can extend and reset it",
}

// PCRWarnings says, for each PCR a secret is sealed to, what changes it:
// after such a change the secret no longer unseals, and a key sealed to
// it must be imported again from its source. Callers show it when they
// seal with PCRs.
func PCRWarnings(pcrs []int) []string {
	var out []string
	for _, p := range pcrs {
		m, ok := pcrMeaning[p]
		switch {
		case ok:
		case p >= 17 && p <= 22:
			m = "dynamic root of trust (Intel TXT, AMD SKINIT): reset by a late launch"
		default:
			m = "not defined by the PC client profile"
		}
		out = append(out, fmt.Sprintf("PCR %d, %s", p, m))
	}
	return out
}
