package tpmproxy_test

import (
	"encoding/binary"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/brokerd/brokerd/internal/swtpmtest"
	"github.com/brokerd/brokerd/internal/tpmproxy"
)

// TestSLB9670Profile: the profile file says what the benchmarks rely on:
// 5 P-256 signatures/s (200 ms), 4 RSA-2048 signatures/s (250 ms).
func TestSLB9670Profile(t *testing.T) {
	p, err := tpmproxy.LoadProfile("../../testdata/tpm-profiles/slb9670.toml")
	if err != nil {
		t.Fatal(err)
	}
	sign, _ := tpmproxy.CommandCode("TPM2_Sign")
	rsa, _ := tpmproxy.CommandCode("RSA_Decrypt")
	if p.Name != "slb9670" || p.Delay(sign) != 200*time.Millisecond || p.Rate(sign) != 5 ||
		p.Delay(rsa) != 250*time.Millisecond || p.Rate(rsa) != 4 || p.Delay(0x17A) != 3*time.Millisecond {
		t.Fatalf("profile %s", p)
	}
}

func TestLoadProfileRefusesMistakes(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ content, want string }{
		{"name = \"x\"\ndefault = \"1ms\"\n[commands]\nSign = \"1ms\"\n", ""},
		{"name = \"x\"\n[commands]\n0x15D = \"1ms\"\n", ""},
		{"default = \"1ms\"\n", "no name"},
		{"name = \"x\"\nfast = true\n", "unknown field fast"},
		{"name = \"x\"\n[commands]\nSing = \"1ms\"\n", `unknown command "Sing"`},
		{"name = \"x\"\n[commands]\nSign = \"fast\"\n", "Sign: time: invalid duration"},
		{"name = \"x\"\ndefault = \"-1ms\"\n", "negative delay"},
	} {
		path := filepath.Join(dir, "p.toml")
		if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := tpmproxy.LoadProfile(path)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%q: %v, want %q", tc.content, err, tc.want)
		}
	}
}

// TestProxyPlaysTheProfile: a command's answer comes no sooner than the
// profile says.
func TestProxyPlaysTheProfile(t *testing.T) {
	sw := swtpmtest.Start(t)
	p := &tpmproxy.Profile{Name: "test", Default: 80 * time.Millisecond}
	proxy, err := tpmproxy.Start(t.TempDir(), sw.Socket(), tpmproxy.Options{Delay: p.Delay})
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	c, err := net.Dial("unix", proxy.Socket())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if _, err := c.Write([]byte{0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7b, 0, 8}); err != nil { // GetRandom(8)
		t.Fatal(err)
	}
	var hdr [10]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < p.Default || binary.BigEndian.Uint32(hdr[6:]) != 0 {
		t.Fatalf("answer %x after %v, want success after %v at least", hdr, took, p.Default)
	}
}
