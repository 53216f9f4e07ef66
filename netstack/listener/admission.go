package listener

// Admission control bounds what a host that proves nothing can make the
// listeners spend.
//
// Connections are counted at accept, per kind of listener (the API
// listeners share one table, the health listeners another, so a flood of
// one cannot lock clients out of the other): a connection beyond
// Config.MaxConns open, or beyond Config.MaxConnsPerIP open from its
// source address (IPv6: its /Config.IPv6PrefixLen), is reset at once,
// before any TLS work, and counted. That table holds only addresses with a
// connection open, so it never holds more than MaxConns entries.
//
// A connection from an address that kept having full handshakes refused
// (see handshake.go) is held instead: accepted, nothing read from it, and
// reset after Config.MaxPause. A flooder that waits for the server's first
// record, as a TLS client does, gets one attempt per pause per connection
// it keeps open, instead of as many as the loopback or the LAN carries,
// and every attempt costs the server an accept and a close. Held
// connections have a count of their own, at most MaxConns (whatever
// their addresses: only closed addresses have any): beyond, a connection
// is reset at once. They take no place among the open ones.

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// ConnStats counts what admission control did at accept on one kind of
// listener (API or health) since the server started.
type ConnStats struct {
	// Open is the number of connections open now, and Addrs the number of
	// source addresses (IPv6: prefixes) they come from.
	Open, Addrs int
	// Accepted counts connections admitted.
	Accepted uint64
	// RefusedCap counts connections reset at accept because MaxConns were
	// open on this kind of listener.
	RefusedCap uint64
	// RefusedCapPerIP counts connections reset at accept because
	// MaxConnsPerIP were open from their source address.
	RefusedCapPerIP uint64
	// RefusedRate counts connections refused at accept, held or reset,
	// because their source address kept having full handshakes refused
	// (API listeners only; see handshake.go).
	RefusedRate uint64
	// Held is the number of refused connections held now.
	Held int
}

// AdmissionStats is the state of admission control, for metrics.
type AdmissionStats struct {
	// API and Health are the connection counts of the API and the health
	// listeners.
	API, Health ConnStats
	// Handshakes are the full handshakes of the API listeners.
	Handshakes HandshakeStats
	// Paced counts the connections held after an answer (pace.go).
	Paced PaceStats
}

// admissionEvent is what a test hook hears of.
type admissionEvent string

const (
	evAccepted     admissionEvent = "accepted"
	evRefusedCap   admissionEvent = "refused-cap"
	evRefusedCapIP admissionEvent = "refused-cap-per-ip"
	evRefusedAddr  admissionEvent = "refused-rate-at-accept"
	evReleased     admissionEvent = "released"
	evHeldReset    admissionEvent = "held-reset"
	evCharged      admissionEvent = "charged"
	evRefusedRate  admissionEvent = "refused-rate"
	listenerAPI                   = "api"
	listenerHealth                = "health"
)

// admissionHook, when set (tests only, before serving), hears of every
// admission decision after it took effect, with the listener kind.
type admissionHook func(kind string, ev admissionEvent, key netip.Prefix)

// addrKey is the key of a peer's address: its IPv4 address, or its IPv6
// address cut to v6bits (IPv4-mapped IPv6 addresses count as IPv4; zones
// are dropped). Peers without an IP address (unix sockets) share the zero
// key.
func addrKey(a net.Addr, v6bits int) netip.Prefix {
	var ip netip.Addr
	switch a := a.(type) {
	case *net.TCPAddr:
		ip = a.AddrPort().Addr()
	case nil:
	default:
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			ip = ap.Addr()
		}
	}
	ip = ip.Unmap().WithZone("")
	if !ip.IsValid() {
		return netip.Prefix{}
	}
	bits := 32
	if ip.Is6() {
		bits = v6bits
	}
	p, err := ip.Prefix(bits)
	if err != nil { // v6bits is checked by NewServer
		return netip.PrefixFrom(ip, ip.BitLen())
	}
	return p
}

// connLimiter counts the open connections of one kind of listener, in
// total and per source address.
type connLimiter struct {
	kind       string
	max, perIP int // < 0: no cap
	v6bits     int
	hook       admissionHook
	// closed, when set, tells the addresses whose connections are reset
	// at accept whatever the counts.
	closed func(netip.Prefix) bool

	// hold is how long a connection of a closed address is held before
	// its reset; <= 0: reset at once.
	hold time.Duration

	mu     sync.Mutex
	open   int
	byAddr map[netip.Prefix]int // only addresses with a connection open
	held   int

	accepted, refusedCap, refusedCapIP, refusedRate atomic.Uint64
}

func newConnLimiter(kind string, cfg Config) *connLimiter {
	return &connLimiter{kind: kind, max: cfg.MaxConns, perIP: cfg.MaxConnsPerIP, v6bits: cfg.IPv6PrefixLen,
		hold: cfg.MaxPause, byAddr: map[netip.Prefix]int{}}
}

// acquire counts a new connection from key, or says why it is refused.
func (l *connLimiter) acquire(key netip.Prefix) (admissionEvent, bool) {
	if l.closed != nil && l.closed(key) {
		l.refusedRate.Add(1)
		return evRefusedAddr, false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.max >= 0 && l.open >= l.max {
		l.refusedCap.Add(1)
		return evRefusedCap, false
	}
	n := l.byAddr[key]
	if l.perIP >= 0 && n >= l.perIP {
		l.refusedCapIP.Add(1)
		return evRefusedCapIP, false
	}
	l.open++
	l.byAddr[key] = n + 1
	l.accepted.Add(1)
	return evAccepted, true
}

func (l *connLimiter) release(key netip.Prefix) {
	l.mu.Lock()
	l.open--
	if n := l.byAddr[key] - 1; n > 0 {
		l.byAddr[key] = n
	} else {
		delete(l.byAddr, key)
	}
	l.mu.Unlock()
	l.notify(evReleased, key)
}

// holdPlace takes a place among the held connections, if there is one.
func (l *connLimiter) holdPlace() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.hold <= 0 || (l.max >= 0 && l.held >= l.max) {
		return false
	}
	l.held++
	return true
}

// unhold gives back the place of a connection from key that was held.
func (l *connLimiter) unhold(key netip.Prefix) {
	l.mu.Lock()
	l.held--
	l.mu.Unlock()
	l.notify(evHeldReset, key)
}

func (l *connLimiter) notify(ev admissionEvent, key netip.Prefix) {
	if l.hook != nil {
		l.hook(l.kind, ev, key)
	}
}

func (l *connLimiter) stats() ConnStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return ConnStats{Open: l.open, Addrs: len(l.byAddr), Accepted: l.accepted.Load(),
		RefusedCap: l.refusedCap.Load(), RefusedCapPerIP: l.refusedCapIP.Load(), RefusedRate: l.refusedRate.Load(), Held: l.held}
}

// wrap returns a listener that admits connections through l.
func (l *connLimiter) wrap(inner net.Listener) net.Listener {
	return &admitListener{Listener: inner, lim: l, held: map[net.Conn]*time.Timer{}}
}

// admitListener resets, at accept, the connections its limiter refuses,
// or holds them first (those of closed addresses).
type admitListener struct {
	net.Listener
	lim *connLimiter

	mu     sync.Mutex
	closed bool
	held   map[net.Conn]*time.Timer // until its reset
}

// Accept returns the next admitted connection; refused ones are reset (or
// held) and counted on the way.
func (l *admitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		key := addrKey(c.RemoteAddr(), l.lim.v6bits)
		ev, ok := l.lim.acquire(key)
		if !ok {
			if ev != evRefusedAddr || !l.hold(c, key) {
				reset(c)
			}
			l.lim.notify(ev, key)
			continue
		}
		l.lim.notify(ev, key)
		return &admittedConn{Conn: c, lim: l.lim, key: key}, nil
	}
}

// hold keeps c, unread, for the limiter's hold time and then resets it,
// if the held connections' bounds leave it a place.
func (l *admitListener) hold(c net.Conn, key netip.Prefix) bool {
	if !l.lim.holdPlace() {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		l.lim.unhold(key)
		return false
	}
	l.held[c] = time.AfterFunc(l.lim.hold, func() {
		l.mu.Lock()
		_, mine := l.held[c] // Close may have taken it
		delete(l.held, c)
		l.mu.Unlock()
		if mine {
			reset(c)
			l.lim.unhold(key)
		}
	})
	return true
}

// Close stops accepting and resets the connections held.
func (l *admitListener) Close() error {
	err := l.Listener.Close()
	l.mu.Lock()
	l.closed = true
	held := l.held
	l.held = map[net.Conn]*time.Timer{}
	l.mu.Unlock()
	for c, t := range held {
		t.Stop()
		reset(c)
		l.lim.unhold(addrKey(c.RemoteAddr(), l.lim.v6bits))
	}
	return err
}

// reset closes c with a TCP reset (no TIME_WAIT left on the server for a
// peer that may open thousands).
func reset(c net.Conn) {
	if tc, ok := c.(interface{ SetLinger(int) error }); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// admittedConn is an admitted connection; closing it frees its place.
type admittedConn struct {
	net.Conn
	lim  *connLimiter
	key  netip.Prefix
	once sync.Once
}

// Close closes the connection and gives its place back, once.
func (c *admittedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.lim.release(c.key) })
	return err
}

// CloseWrite half-closes the connection when the underlying one can
// (net/http uses it to close plain connections gracefully).
func (c *admittedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
