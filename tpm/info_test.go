package tpm_test

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/brokerd/brokerd/internal/certs"
	"github.com/brokerd/brokerd/internal/swtpmtest"
	"github.com/brokerd/brokerd/internal/tpmproxy"
	"github.com/brokerd/brokerd/tpm"
)

// TestInfo: what a fresh swtpm says of itself, as tpm info shows it.
func TestInfo(t *testing.T) {
	d, _ := open(t, tpm.Config{})
	info, err := d.Info(context.Background(), tpm.InfoOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Firmware.Manufacturer != "IBM" || info.FirmwareVersion == "0.0.0.0" || info.VendorString == "" {
		t.Errorf("maker %q, firmware %s, vendor string %q: want swtpm's (IBM)", info.Firmware.Manufacturer, info.FirmwareVersion, info.VendorString)
	}
	if info.Spec.Family != "2.0" || info.Spec.Revision == "0.00" || info.Spec.Year < 2013 {
		t.Errorf("spec %+v", info.Spec)
	}
	for _, want := range []string{"rsa", "ecc", "sha256", "ecdsa", "aes"} {
		if !slices.Contains(info.Algorithms, want) {
			t.Errorf("algorithms %v lack %s", info.Algorithms, want)
		}
	}
	if !slices.Contains(info.Curves, "nist_p256") {
		t.Errorf("curves %v lack nist_p256", info.Curves)
	}
	if !info.KeyTypes[tpm.RSA2048] || !info.KeyTypes[tpm.P256] || info.KeyTypes[tpm.RSA4096] {
		t.Errorf("key types %v: swtpm holds RSA-2048 and P-256, not RSA-4096", info.KeyTypes)
	}
	if banks := activeBanks(info); !slices.Equal(banks, []string{"sha1", "sha256", "sha384", "sha512"}) {
		t.Errorf("active PCR banks %v: a fresh swtpm has all four", banks)
	}
	if info.Lockout.AuthSet || info.Lockout.MaxTries == 0 || !info.Hierarchies.PlatformEnabled {
		t.Errorf("lockout %+v, hierarchies %+v", info.Lockout, info.Hierarchies)
	}
	if len(info.Persistent) != 0 || len(info.EKCertificates) != 0 || len(info.Advisories) != 0 || info.Rates != nil {
		t.Errorf("persistent %v, EK certificates %v, advisories %v, rates %v: want none", info.Persistent, info.EKCertificates, info.Advisories, info.Rates)
	}
	checkNoLeaks(t, d)
}

func activeBanks(info *tpm.Info) []string {
	var out []string
	for _, b := range info.PCRBanks {
		if b.Active {
			out = append(out, b.Hash)
		}
	}
	return out
}

// manufactured opens a Device on a swtpm manufactured with EK
// certificates.
func manufactured(t *testing.T) (*tpm.Device, swtpmtest.Vendor) {
	t.Helper()
	sw, vendor := swtpmtest.StartManufactured(t)
	d, err := tpm.Open(tpm.Config{Address: sw.Address()}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d, vendor
}

// TestInfoManufactured: a TPM as its maker ships it: endorsement keys
// persistent, their certificates in NV, two PCR banks.
func TestInfoManufactured(t *testing.T) {
	d, _ := manufactured(t)
	info, err := d.Info(context.Background(), tpm.InfoOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if banks := activeBanks(info); !slices.Equal(banks, []string{"sha1", "sha256"}) {
		t.Errorf("active PCR banks %v, want sha1 and sha256 (as manufactured)", banks)
	}
	handles := func(hs []tpm.Handle) (out []string) {
		for _, h := range hs {
			out = append(out, h.Handle+" "+h.What)
		}
		return out
	}
	if got := handles(info.Persistent); !slices.Contains(got, "0x81010001 RSA endorsement key (the TCG's reserved handle)") {
		t.Errorf("persistent handles %q lack the RSA EK", got)
	}
	want := []string{"0x01c00002 RSA-2048 EK certificate", "0x01c00016 ECC P-384 EK certificate (high range)"}
	if got := handles(info.EKCertificates); !slices.Equal(got, want) {
		t.Errorf("EK certificates %q, want %q", got, want)
	}
	if len(info.Advisories) != 0 {
		t.Errorf("advisories %+v for swtpm's EK", info.Advisories)
	}
}

// TestEKCertificate: the EK certificate comes out of NV, certifies the
// EK brokerd wraps keys for, and chains to the vendor's root only.
func TestEKCertificate(t *testing.T) {
	ctx := context.Background()
	d, vendor := manufactured(t)
	cert, err := d.EKCertificate(ctx, tpm.ParentRSAEK)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := d.EndorsementKey(ctx, tpm.ParentRSAEK)
	if err != nil {
		t.Fatal(err)
	}
	root, inter := readCert(t, vendor.Root), readCert(t, vendor.Intermediate)
	pub, err := tpm.VerifyEKCertificate(cert, []*x509.Certificate{root, inter}, time.Now())
	if err != nil {
		t.Fatalf("verify against the vendor's root and intermediate: %v", err)
	}
	if !pub.(interface{ Equal(crypto.PublicKey) bool }).Equal(ek) {
		t.Fatal("the certified key is not the EK")
	}
	if _, err := tpm.VerifyEKCertificate(cert, []*x509.Certificate{root}, time.Now()); err == nil {
		t.Error("verified without the intermediate CA")
	}
	if _, err := tpm.VerifyEKCertificate(cert, []*x509.Certificate{inter}, time.Now()); err == nil {
		t.Error("verified with no root at all")
	}
	_, other := swtpmtest.StartManufactured(t)
	if _, err := tpm.VerifyEKCertificate(cert, []*x509.Certificate{readCert(t, other.Root), readCert(t, other.Intermediate)}, time.Now()); err == nil {
		t.Error("verified against another vendor's root")
	}
	if _, err := d.EKCertificate(ctx, tpm.ParentECCEK); !errors.Is(err, tpm.ErrNoEKCert) {
		t.Errorf("ECC P-256 EK certificate (swtpm stores none): %v, want ErrNoEKCert", err)
	}
	checkNoLeaks(t, d)
}

func TestEKCertificateAbsent(t *testing.T) {
	d, _ := open(t, tpm.Config{})
	if _, err := d.EKCertificate(context.Background(), tpm.ParentRSAEK); !errors.Is(err, tpm.ErrNoEKCert) {
		t.Fatalf("a TPM without EK certificates: %v, want ErrNoEKCert", err)
	}
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := certs.ParsePEM(data)
	if err != nil {
		t.Fatal(err)
	}
	return cs[0]
}

// TestMeasureRates: the rates are the TPM's: a chip that takes 40 ms per
// signature (the proxy holds each answer that long) cannot sign faster
// than 25/s, whatever brokerd does around it; each throwaway key is
// flushed; a used-up budget skips what is left.
func TestMeasureRates(t *testing.T) {
	const hold = 40 * time.Millisecond
	sw := swtpmtest.Start(t)
	p, err := tpmproxy.Start(t.TempDir(), sw.Socket(), tpmproxy.Options{Delay: func(cc uint32) time.Duration {
		if cc == ccSign || cc == ccRSADecrypt {
			return hold
		}
		return 0
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	d, err := tpm.Open(tpm.Config{Address: "swtpm:" + p.Socket()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	rates, err := d.MeasureRates(context.Background(), 200*time.Millisecond, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var algs []tpm.Algorithm
	for _, r := range rates {
		algs = append(algs, r.Algorithm)
		if r.Skipped != "" || r.Signatures < 1 || r.PerSecond <= 0 || r.PerSecond > float64(time.Second/hold) || r.MedianMS < 40 {
			t.Errorf("%+v: want a rate at most %d/s, from the TPM's time", r, time.Second/hold)
		}
	}
	if !slices.Equal(algs, []tpm.Algorithm{tpm.P256, tpm.P384, tpm.RSA2048, tpm.RSA3072}) {
		t.Errorf("measured %v", algs)
	}
	if n := p.Count(ccSign) + p.Count(ccRSADecrypt); n < len(rates) {
		t.Errorf("%d signing commands for %d rates", n, len(rates))
	}
	checkNoLeaks(t, d)
	if n, _ := d.CachedObjects(context.Background()); n > 1 {
		t.Errorf("%d objects stay loaded after the measurement: the throwaway keys were not flushed", n)
	}
	rates, err = d.MeasureRates(context.Background(), time.Hour, time.Nanosecond)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rates {
		if r.Skipped == "" {
			t.Errorf("%s measured after the budget was used up", r.Algorithm)
		}
	}
}

// ccSign is TPM2_Sign, which brokerd's ECDSA signatures use.
const ccSign = 0x15D
