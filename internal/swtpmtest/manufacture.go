package swtpmtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Vendor is the stand-in for a TPM maker's PKI that StartManufactured
// made: its root CA and the intermediate CA that signed the EK
// certificates (PEM files).
type Vendor struct {
	Root, Intermediate string
}

// StartManufactured runs a swtpm that swtpm_setup manufactured first, as a
// TPM maker would: an RSA-2048 endorsement key (persistent at 0x81010001,
// certificate in NV index 0x01c00002) and an ECC one (swtpm 0.7 makes it
// P-384: persistent at 0x81010016, certificate at 0x01c00016; nothing at
// the P-256 index 0x01c0000a), the NV indices locked, and the sha1 and
// sha256 PCR banks active (as an SLB9670 has them). The certificates are
// signed by a CA made for this TPM alone: swtpm_setup and swtpm_localca
// get configuration files of the test's own, so nothing is read from or
// written to the host's /etc/swtpm* or /var/lib/swtpm-localca.
func StartManufactured(t testing.TB) (*TPM, Vendor) {
	t.Helper()
	localca, err := exec.LookPath("swtpm_localca")
	if err == nil {
		_, err = exec.LookPath("swtpm_setup")
	}
	if err != nil {
		t.Fatalf("swtpm-tools is not installed: run `make test` (it installs it) or `apt-get install swtpm-tools`: %v", err)
	}
	s := newTPM(t)
	conf, ca := filepath.Join(s.dir, "vendor"), filepath.Join(s.dir, "vendor", "ca")
	if err := os.MkdirAll(ca, 0o700); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"swtpm_setup.conf": fmt.Sprintf("create_certs_tool = %s\ncreate_certs_tool_config = %s\n"+
			"create_certs_tool_options = %s\nactive_pcr_banks = sha1,sha256\n",
			localca, filepath.Join(conf, "swtpm-localca.conf"), filepath.Join(conf, "swtpm-localca.options")),
		"swtpm-localca.conf": fmt.Sprintf("statedir = %s\nsigningkey = %s\nissuercert = %s\ncertserial = %s\n",
			ca, filepath.Join(ca, "signkey.pem"), filepath.Join(ca, "issuercert.pem"), filepath.Join(ca, "certserial")),
		"swtpm-localca.options": "--platform-manufacturer brokerd-test\n--platform-version 2.1\n--platform-model swtpm\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(conf, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("swtpm_setup", "--tpm2", "--tpmstate", filepath.Join(s.dir, "state"),
		"--create-ek-cert", "--lock-nvram", "--pcr-banks", "sha1,sha256",
		"--config", filepath.Join(conf, "swtpm_setup.conf"), "--logfile", filepath.Join(conf, "setup.log"))
	// swtpm_localca's temporary files go to the test's directory too.
	cmd.Env = append(os.Environ(), "TMPDIR="+conf, "XDG_CONFIG_HOME="+conf, "HOME="+conf)
	if out, err := cmd.CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(conf, "setup.log"))
		t.Fatalf("swtpm_setup: %v\n%s\n%s", err, out, log)
	}
	s.start()
	return s, Vendor{Root: filepath.Join(ca, "swtpm-localca-rootca-cert.pem"), Intermediate: filepath.Join(ca, "issuercert.pem")}
}
