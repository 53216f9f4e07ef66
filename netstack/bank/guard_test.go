package bank_test

import (
	"net"
	"testing"

	"github.com/brokerd/brokerd/netstack/bank"
)

// TestBlocked: every class of the IANA special-purpose registries, IPv4
// embedded in IPv6 unwrapped first, and public addresses let through.
func TestBlocked(t *testing.T) {
	t.Parallel()
	blocked := []string{
		// IPv4 special purpose.
		"0.0.0.0", "0.1.2.3", "10.0.0.1", "100.64.0.1", "100.127.255.254", "127.0.0.1", "127.1.2.3", "169.254.169.254",
		"172.16.5.4", "172.31.255.255", "192.0.0.1", "192.0.0.170", "192.0.2.1", "192.31.196.1", "192.52.193.1",
		"192.88.99.1", "192.168.1.1", "192.175.48.1", "198.18.0.1", "198.19.255.254", "198.51.100.7", "203.0.113.5",
		"224.0.0.1", "239.255.255.250", "240.0.0.1", "250.1.2.3", "255.255.255.255",
		// IPv6 special purpose.
		"::", "::1", "fe80::1", "fc00::1", "fd12:3456::1", "fec0::1", "ff02::1", "2001:db8::1", "3fff::1", "100::1",
		"2001::1", "2001:0:4136:e378:8000:63bf:3fff:fdd2", // Teredo
		"2001:2::1", "2002:c000:0201::1", "2002:0808:0808::1", // benchmarking, 6to4 (even of a public address)
		"2620:4f:8000::1", "5f00::1", "64:ff9b:1::1",
		// IPv4 inside IPv6.
		"::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", // IPv4-mapped
		"::127.0.0.1", "::8.8.8.8", // IPv4-compatible (deprecated): never a bank
		"64:ff9b::127.0.0.1", "64:ff9b::a00:1", "64:ff9b::169.254.169.254", // NAT64 of special addresses
	}
	public := []string{
		"8.8.8.8", "1.1.1.1", "100.128.0.1", "172.32.0.1", "192.0.1.1", "198.20.0.1", "223.255.255.254",
		"2a00:1450:4001:80b::200e", "2606:4700:4700::1111",
		"::ffff:8.8.8.8",     // IPv4-mapped public
		"64:ff9b::8.8.8.8",   // NAT64 of a public address: how an IPv6-only appliance reaches an IPv4 bank
		"64:ff9b::5db8:d822", // the same, written in hex
	}
	for _, ip := range blocked {
		if !bank.Blocked(net.ParseIP(ip)) {
			t.Errorf("Blocked(%s) = false, want true", ip)
		}
	}
	for _, ip := range public {
		if bank.Blocked(net.ParseIP(ip)) {
			t.Errorf("Blocked(%s) = true, want false", ip)
		}
	}
	if !bank.Blocked(nil) {
		t.Error("Blocked(nil) = false")
	}
}
