package bank

import (
	"net"
	"net/netip"
)

// special are the IANA special-purpose address blocks (IPv4 and IPv6
// registries) and multicast: no bank lives there, and loopback, private,
// link-local and the like are where an appliance's neighbours do. An
// address in one is reached only through a rule with --allow-private.
var special = prefixes(
	// IPv4 (RFC 6890 and its updates).
	"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
	"192.0.0.0/24", "192.0.2.0/24", "192.31.196.0/24", "192.52.193.0/24", "192.88.99.0/24", "192.168.0.0/16",
	"192.175.48.0/24", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
	"255.255.255.255/32",
	// IPv6.
	"::/128", "::1/128", "::/96", // unspecified, loopback, IPv4-compatible (deprecated)
	"64:ff9b:1::/48", "100::/64", "100:0:0:1::/64", "2001::/23", "2001:db8::/32", "2002::/16",
	"2620:4f:8000::/48", "3fff::/20", "5f00::/16", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
)

// nat64 is the well-known NAT64 prefix: its addresses stand for the IPv4
// address in their last 32 bits, which is what is checked.
var nat64 = netip.MustParsePrefix("64:ff9b::/96")

func prefixes(s ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(s))
	for i, p := range s {
		out[i] = netip.MustParsePrefix(p)
	}
	return out
}

// Blocked reports whether makeRequest must not reach ip without a rule
// that allows private addresses: it is in a special-purpose block
// (loopback, private, link-local, shared, documentation, benchmarking,
// reserved, 6to4, Teredo, NAT64 local use, site-local, unique local,
// multicast...), or it carries such an IPv4 address (IPv4-mapped, NAT64).
func Blocked(ip net.IP) bool {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return true
	}
	a = a.Unmap() // ::ffff:a.b.c.d is a.b.c.d
	if nat64.Contains(a) {
		b := a.As16()
		a = netip.AddrFrom4([4]byte(b[12:]))
	}
	for _, p := range special {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
