package listener

import (
	"net"
	"testing"
)

// TestAddrKey: IPv4 addresses count one by one, IPv4-mapped IPv6 as IPv4,
// IPv6 by prefix (zones dropped), and peers without an IP share one key.
func TestAddrKey(t *testing.T) {
	t.Parallel()
	tcp := func(s string) net.Addr { return &net.TCPAddr{IP: net.ParseIP(s), Port: 4242} }
	for _, tc := range []struct {
		addr   net.Addr
		v6bits int
		want   string
	}{
		{tcp("192.0.2.7"), 64, "192.0.2.7/32"},
		{tcp("::ffff:192.0.2.7"), 64, "192.0.2.7/32"},
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.7").To4()}, 64, "192.0.2.7/32"},
		{tcp("2001:db8:1:2:aaaa::1"), 64, "2001:db8:1:2::/64"},
		{tcp("2001:db8:1:2:ffff::9"), 64, "2001:db8:1:2::/64"},
		{tcp("2001:db8:1:3::1"), 64, "2001:db8:1:3::/64"},
		{tcp("2001:db8:1:2:aaaa::1"), 128, "2001:db8:1:2:aaaa::1/128"},
		{tcp("2001:db8:1:2:aaaa::1"), 48, "2001:db8:1::/48"},
		{&net.TCPAddr{IP: net.ParseIP("fe80::1"), Zone: "eth0"}, 64, "fe80::/64"},
		{tcp("::1"), 64, "::/64"},
		{&net.UnixAddr{Name: "/run/brokerd.sock", Net: "unix"}, 64, "invalid Prefix"},
		{nil, 64, "invalid Prefix"},
	} {
		if got := addrKey(tc.addr, tc.v6bits).String(); got != tc.want {
			t.Errorf("addrKey(%v, %d) = %s, want %s", tc.addr, tc.v6bits, got, tc.want)
		}
	}
}

// TestAdmittedConnReleasesOnce: a connection closed twice (by its server
// and by CloseClients, say) gives its place back once.
func TestAdmittedConnReleasesOnce(t *testing.T) {
	t.Parallel()
	l := newConnLimiter(listenerAPI, Config{MaxConns: 2, MaxConnsPerIP: 1, IPv6PrefixLen: 64})
	key := addrKey(&net.TCPAddr{IP: net.ParseIP("192.0.2.1")}, 64)
	if _, ok := l.acquire(key); !ok {
		t.Fatal("the first connection was refused")
	}
	a, b := net.Pipe()
	defer b.Close()
	c := &admittedConn{Conn: a, lim: l, key: key}
	c.Close()
	c.Close()
	if st := l.stats(); st.Open != 0 || st.Addrs != 0 {
		t.Fatalf("after two closes: %+v", st)
	}
	if _, ok := l.acquire(key); !ok {
		t.Fatal("the place was not given back")
	}
	if ev, ok := l.acquire(key); ok || ev != evRefusedCapIP {
		t.Fatalf("a second connection from the address: %v %v, want refused by the per-address cap", ev, ok)
	}
}
