package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/brokerd/brokerd/internal/certs"
	"github.com/brokerd/brokerd/internal/swtpmtest"
	"github.com/brokerd/brokerd/internal/testpki"
)

// newManufacturedCLI initialises brokerd on a swtpm manufactured with EK
// certificates, and returns the vendor's CA files as one PEM file (root
// and intermediate) and the root alone.
func newManufacturedCLI(t *testing.T) (c *cli, vendor, rootOnly string) {
	t.Helper()
	sw, v := swtpmtest.StartManufactured(t)
	c = &cli{t: t, dir: t.TempDir()}
	c.config = filepath.Join(c.dir, "etc", "brokerd.toml")
	out := c.run("", "init", "--dir", filepath.Join(c.dir, "etc"), "--tpm", sw.Address(), "--admin-socket", filepath.Join(c.dir, "admin.sock"))
	if out.code != 0 || strings.Contains(out.stderr, "lockout") {
		t.Fatalf("init: %d %q", out.code, out.stderr)
	}
	root, _ := os.ReadFile(v.Root)
	inter, _ := os.ReadFile(v.Intermediate)
	return c, c.file("vendor.pem", append(root, inter...)), v.Root
}

// TestTPMInfo: tpm info describes the box, as text and JSON, measured or
// not, directly and through a running daemon; init left the lockout
// hierarchy brokerd's.
func TestTPMInfo(t *testing.T) {
	c, _, _ := newManufacturedCLI(t)
	text := c.must("tpm", "info", "--no-rates")
	for _, want := range []string{
		"manufacturer        IBM (also swtpm) (IBM), \"SW   TPM\"",
		"PCR banks           sha1 (24 PCRs), sha256 (24 PCRs), sha384 (inactive), sha512 (inactive)",
		"lockout auth        set by brokerd init, kept in the state file",
		"EK certificates     0x01c00002 RSA-2048 EK certificate",
		"known-bad firmware: none known",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("tpm info lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "rate ") {
		t.Errorf("--no-rates measured rates:\n%s", text)
	}
	var rep struct {
		Address         string `json:"address"`
		LockoutAuthKept bool   `json:"lockout_auth_kept"`
		Lockout         struct {
			AuthSet bool `json:"lockout_auth_set"`
		} `json:"lockout"`
		Rates []struct {
			Algorithm string  `json:"algorithm"`
			PerSecond float64 `json:"per_second"`
		} `json:"rates"`
	}
	c.start()
	out := c.must("tpm", "info", "--json", "--rate-time", "100ms") // through the daemon's admin socket
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("tpm info --json: %v\n%s", err, out)
	}
	if !rep.LockoutAuthKept || !rep.Lockout.AuthSet || !strings.HasPrefix(rep.Address, "swtpm:") {
		t.Errorf("tpm info --json: %+v", rep)
	}
	if len(rep.Rates) != 4 {
		t.Errorf("rates %+v, want p256, p384, rsa2048, rsa3072", rep.Rates)
	}
	for _, r := range rep.Rates {
		if r.PerSecond <= 0 {
			t.Errorf("rate %+v", r)
		}
	}
}

// TestEKCertificateChecksWrap: tpm ek exports the EK certificate the maker
// stored; key wrap checks it against the vendor's root, and that it
// certifies the EK given, before wrapping; the blob then imports.
func TestEKCertificateChecksWrap(t *testing.T) {
	appliance, vendor, rootOnly := newManufacturedCLI(t)
	ek, cert := appliance.path("ek.pem"), appliance.path("ek.crt")
	appliance.must("tpm", "ek", "--alg", "rsa", "--out", ek, "--cert-out", cert)
	appliance.fail(1, "keeps no certificate for that endorsement key", "tpm", "ek", "--alg", "ecc", "--out", appliance.path("ecc.pem"),
		"--cert-out", appliance.path("ecc.crt"))
	if _, err := os.Stat(appliance.path("ecc.crt")); err == nil {
		t.Error("a certificate file was written for an EK without certificate")
	}

	ws := &cli{t: t, dir: t.TempDir(), config: "/nonexistent/brokerd.toml"}
	keyFile := filepath.Join(ws.dir, "qseal.key")
	mustOpenSSL(t, nil, "genrsa", "-out", keyFile, "2048")
	blob := ws.path("qseal.blob")
	wrap := func(extra ...string) []string {
		return append([]string{"key", "wrap", "--key", keyFile, "--out", blob}, extra...)
	}
	stranger := testpki.NewCA(t, "Not the TPM's maker")
	ws.fail(1, "verify EK certificate", wrap("--ek-cert", cert, "--vendor-root", ws.file("stranger.pem", certs.EncodePEM(stranger.Cert)))...)
	ws.fail(1, "verify EK certificate", wrap("--ek-cert", cert, "--vendor-root", rootOnly)...) // no intermediate
	otherEK := ws.file("other.pem", mustOpenSSL(t, nil, "rsa", "-in", keyFile, "-pubout"))
	ws.fail(1, "is not the one", wrap("--ek", otherEK, "--ek-cert", cert, "--vendor-root", vendor)...)
	ws.fail(2, "give --ek, or --ek-cert with --vendor-root", wrap("--ek-cert", cert)...)
	ws.fail(2, "give --ek, or --ek-cert with --vendor-root", wrap()...)
	if _, err := os.Stat(blob); err == nil {
		t.Fatal("a blob was written by a refused wrap")
	}
	out := ws.must(wrap("--ek", ek, "--ek-cert", cert, "--vendor-root", vendor)...)
	if !strings.Contains(out, `certified by "CN=swtpm-localca"`) {
		t.Errorf("key wrap: %q", out)
	}
	if out := appliance.must("key", "import", "--id", "qseal.key", "--blob", blob); !strings.Contains(out, "ek-wrapped, rsa2048") {
		t.Fatalf("import: %q", out)
	}
}
