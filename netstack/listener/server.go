// Package listener serves brokerd's API: the mutual-TLS listener and the
// plain health listener (given addresses or systemd sockets), the server
// TLS configuration with live reload, client-certificate verification,
// and admission control (connection caps in total and per source
// address, see admission.go; a token bucket per source address on full
// handshakes, see handshake.go). It knows nothing of the API it serves:
// handlers come from outside.
package listener

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/brokerd/brokerd/internal/certs"
)

// Material is what the API listener presents and trusts.
type Material struct {
	// Cert is the server certificate chain; its PrivateKey is a signer
	// (the TPM's).
	Cert tls.Certificate
	// ClientCAs verifies client certificates.
	ClientCAs *x509.CertPool
	// CAs are the certificates in ClientCAs, for logs.
	CAs []*x509.Certificate
}

// LoadMaterial reads the server certificate chain (leaf first) and the
// client CA bundle, and pairs the chain with key, whose public key must be
// the leaf's.
func LoadMaterial(certFile, clientCAFile string, key crypto.Signer) (*Material, error) {
	chain, err := certs.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("listener: server certificate: %w", err)
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(chain[0].PublicKey) {
		return nil, fmt.Errorf("listener: server certificate %s: its public key is not the server key's", certFile)
	}
	cas, err := certs.ReadFile(clientCAFile)
	if err != nil {
		return nil, fmt.Errorf("listener: client CA: %w", err)
	}
	pool := x509.NewCertPool()
	for _, c := range cas {
		pool.AddCert(c)
	}
	m := &Material{ClientCAs: pool, CAs: cas, Cert: tls.Certificate{PrivateKey: key, Leaf: chain[0]}}
	for _, c := range chain {
		m.Cert.Certificate = append(m.Cert.Certificate, c.Raw)
	}
	return m, nil
}

// Config configures the listeners. Zero fields take DefaultConfig's
// values.
type Config struct {
	// MinVersion is tls.VersionTLS12 or tls.VersionTLS13.
	MinVersion uint16
	// The API server's limits, as net/http's Server has them.
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	MaxHeaderBytes    int
	// CheckClient, when set, runs after a client chain verified, on every
	// handshake, full or resumed (revocation checks go here).
	CheckClient func(chain []*x509.Certificate) error
	// OnRefused, when set, hears of every client certificate refused at
	// the handshake, with the chain the client presented.
	OnRefused func(remote string, presented []*x509.Certificate, reason error)
	Log       *slog.Logger

	// Admission control, on each kind of listener (API, health) apart;
	// see admission.go and handshake.go. Loopback is no exception.
	//
	// MaxConns caps the connections open at once; MaxConnsPerIP caps
	// those from one source address. A connection beyond either is
	// reset at accept, before any TLS work. Negative: no cap (then
	// only file descriptors bound the per-address table).
	MaxConns      int
	MaxConnsPerIP int
	// IPv6PrefixLen is the prefix length (1 to 128) under which IPv6
	// addresses count as one source address: a host has a /64 to itself
	// and picks its addresses there at will.
	IPv6PrefixLen int
	// HandshakesPerIP is the rate (per second) at which one source
	// address may have full TLS handshakes on the API listener, each a
	// signature with the server key, with bursts of HandshakeBurstPerIP.
	// Resumed handshakes sign nothing and are free. A handshake beyond
	// it fails before the server signs. Negative: no limit.
	HandshakesPerIP     float64
	HandshakeBurstPerIP int
	// MaxTrackedIPs bounds the addresses whose handshake bucket is kept;
	// beyond it the least recently seen is forgotten. For it and
	// HandshakeBurstPerIP, a negative value means the default too.
	MaxTrackedIPs int
	// RequestsPerIP is the rate (per second) at which one source address
	// has requests without a client certificate answered without a pause
	// (/health, refusals), with bursts of RequestBurstPerIP; MaxPause
	// bounds a pause, and the pause after an answer with Retry-After (a
	// 429 or 503) to a certified client. See pace.go. MaxPause is also how
	// long a connection of an address closed for its refused handshakes
	// is held before its reset (admission.go). Negative: no limit, no
	// pacing, no holding.
	RequestsPerIP     float64
	RequestBurstPerIP int
	MaxPause          time.Duration
	// Clock is the time of the handshake buckets (tests fake it);
	// time.Now when nil.
	Clock func() time.Time
}

// DefaultShutdownTimeout is how long a stopping daemon waits for requests
// in flight unless configured otherwise.
const DefaultShutdownTimeout = 30 * time.Second

// DefaultConfig is the API listener's default configuration.
func DefaultConfig() Config {
	return Config{
		MinVersion:        tls.VersionTLS12,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      90 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		MaxConns:          1024,
		MaxConnsPerIP:     64,
		IPv6PrefixLen:     64,
		// A client that opens its connections at once, then resumes.
		HandshakesPerIP:     10,
		HandshakeBurstPerIP: 32,
		MaxTrackedIPs:       4096,
		// A monitor polls /health a few times a second at most.
		RequestsPerIP:     200,
		RequestBurstPerIP: 200,
		MaxPause:          time.Second,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.MinVersion == 0 {
		c.MinVersion = d.MinVersion
	}
	if c.ReadHeaderTimeout == 0 {
		c.ReadHeaderTimeout = d.ReadHeaderTimeout
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = d.ReadTimeout
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = d.WriteTimeout
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = d.IdleTimeout
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = d.MaxHeaderBytes
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.MaxConns == 0 {
		c.MaxConns = d.MaxConns
	}
	if c.MaxConnsPerIP == 0 {
		c.MaxConnsPerIP = d.MaxConnsPerIP
	}
	if c.IPv6PrefixLen == 0 {
		c.IPv6PrefixLen = d.IPv6PrefixLen
	}
	if c.HandshakesPerIP == 0 {
		c.HandshakesPerIP = d.HandshakesPerIP
	}
	if c.HandshakeBurstPerIP <= 0 {
		c.HandshakeBurstPerIP = d.HandshakeBurstPerIP
	}
	if c.MaxTrackedIPs <= 0 {
		c.MaxTrackedIPs = d.MaxTrackedIPs
	}
	if c.RequestsPerIP == 0 {
		c.RequestsPerIP = d.RequestsPerIP
	}
	if c.RequestBurstPerIP <= 0 {
		c.RequestBurstPerIP = d.RequestBurstPerIP
	}
	if c.MaxPause == 0 {
		c.MaxPause = d.MaxPause
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	return c
}

// Server serves the API over mutual TLS and, optionally, /health over plain
// HTTP. Its TLS material can be replaced while it runs; connections already
// open keep what they negotiated.
type Server struct {
	cfg    Config
	load   func() (*Material, error)
	tlsCur atomic.Pointer[tls.Config]
	api    *http.Server
	health *http.Server
	log    *slog.Logger
	conns  connTable
	// apiConns and healthConns admit the connections of each kind of
	// listener.
	apiConns, healthConns *connLimiter
	// handshakes charges full handshakes to their source address.
	handshakes *handshakeBuckets
	// pace holds connections after answers that do no work.
	pace *pacer

	wg      sync.WaitGroup
	errOnce sync.Once
	errc    chan error
}

// NewServer loads the TLS material with load (again on every Reload) and
// prepares the servers. health may be nil.
func NewServer(cfg Config, load func() (*Material, error), api, health http.Handler) (*Server, error) {
	cfg = cfg.withDefaults()
	if cfg.IPv6PrefixLen < 1 || cfg.IPv6PrefixLen > 128 {
		return nil, fmt.Errorf("listener: IPv6 prefix length %d: want 1 to 128", cfg.IPv6PrefixLen)
	}
	s := &Server{cfg: cfg, load: load, log: cfg.Log, errc: make(chan error, 1), conns: connTable{m: map[net.Conn]*connAuth{}},
		apiConns: newConnLimiter(listenerAPI, cfg), healthConns: newConnLimiter(listenerHealth, cfg), handshakes: newHandshakeBuckets(cfg), pace: newPacer(cfg)}
	s.apiConns.closed = s.handshakes.closed
	if err := s.Reload(); err != nil {
		return nil, err
	}
	errLog := slog.NewLogLogger(cfg.Log.Handler(), slog.LevelDebug)
	// HTTP/1.1 only, whatever ALPN says (see Reload).
	http1 := new(http.Protocols)
	http1.SetHTTP1(true)
	s.api = &http.Server{
		Protocols:         http1,
		Handler:           s.pace.wrap(api),
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          errLog,
		ConnContext:       s.connContext,
		ConnState:         s.connState,
	}
	if health != nil {
		s.health = &http.Server{Handler: s.pace.wrap(health), Protocols: http1, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 5 * time.Second,
			WriteTimeout: 10 * time.Second, IdleTimeout: 30 * time.Second, ErrorLog: errLog}
	}
	return s, nil
}

// Reload loads the TLS material again and uses it for new handshakes. On
// error the material in use stays.
func (s *Server) Reload() error {
	m, err := s.load()
	if err != nil {
		return err
	}
	s.tlsCur.Store(&tls.Config{
		MinVersion:   s.cfg.MinVersion,
		Certificates: []tls.Certificate{m.Cert},
		// A client without a certificate may still reach GET /health; the
		// API handler refuses everything else. A certificate that does
		// not verify fails the handshake, in VerifyConnection (see
		// tlsConfig): crypto/tls's own check would refuse it before
		// brokerd learns whose it was.
		ClientAuth: tls.RequestClientCert,
		ClientCAs:  m.ClientCAs,
		// HTTP/1.1 only, as the reference broker: its clients send one
		// request at a time per connection, and a connection is what
		// admission control counts and paces. HTTP/2 streams would let
		// one connection ask again at once, hundreds at a time.
		NextProtos: []string{"http/1.1"},
	})
	s.log.Info("tls material loaded", "server", m.Cert.Leaf.Subject.String(),
		"not_after", m.Cert.Leaf.NotAfter.UTC().Format(time.RFC3339), "client_cas", len(m.CAs))
	return nil
}

// Leaf is the server certificate in use.
func (s *Server) Leaf() *x509.Certificate { return s.tlsCur.Load().Certificates[0].Leaf }

// tlsConfig is the listener's configuration: every handshake takes the
// material current at that moment, verifies the client's chain itself,
// and signs through a key that charges the full handshake to the
// client's address first (resumed handshakes do not sign).
func (s *Server) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion: s.cfg.MinVersion,
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			cur := s.tlsCur.Load()
			auth := s.conns.get(hello.Conn)
			cfg := cur.Clone()
			cfg.Certificates = []tls.Certificate{s.charged(cur.Certificates[0], hello.Conn)}
			cfg.VerifyConnection = func(cs tls.ConnectionState) error {
				chain, err := s.verifyClient(cur.ClientCAs, cs.PeerCertificates)
				if err != nil {
					if s.cfg.OnRefused != nil {
						s.cfg.OnRefused(remoteHost(hello.Conn.RemoteAddr()), cs.PeerCertificates, err)
					}
					s.log.Info("client certificate refused", "remote", hello.Conn.RemoteAddr().String(),
						"subject", cs.PeerCertificates[0].Subject.String(), "reason", err.Error())
					return err
				}
				if auth != nil {
					auth.set(chain)
				}
				return nil
			}
			return cfg, nil
		},
	}
}

// remoteHost is the address of a peer without its port: refusals from
// one host are counted together whatever port each connection used.
func remoteHost(a net.Addr) string {
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// charged returns cert with a key that charges each signature to the
// address of conn.
func (s *Server) charged(cert tls.Certificate, conn net.Conn) tls.Certificate {
	key, ok := cert.PrivateKey.(crypto.Signer)
	if !ok {
		return cert
	}
	var addr netip.Prefix
	if c, ok := conn.(*admittedConn); ok {
		addr = c.key
	} else {
		addr = addrKey(conn.RemoteAddr(), s.cfg.IPv6PrefixLen)
	}
	cert.PrivateKey = &chargedSigner{key: key, buckets: s.handshakes, addr: addr}
	return cert
}

// verifyClient checks a presented chain (leaf first) against the client
// CAs, for client authentication, now; none presented is no error.
func (s *Server) verifyClient(roots *x509.CertPool, presented []*x509.Certificate) ([]*x509.Certificate, error) {
	if len(presented) == 0 {
		return nil, nil
	}
	inter := x509.NewCertPool()
	for _, c := range presented[1:] {
		inter.AddCert(c)
	}
	chains, err := presented[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		return nil, fmt.Errorf("client certificate: %w", err)
	}
	if s.cfg.CheckClient != nil {
		if err := s.cfg.CheckClient(chains[0]); err != nil {
			return nil, err
		}
	}
	return chains[0], nil
}

// connAuth is the verified client chain of one connection, and the
// connection, to close it when its client is revoked.
type connAuth struct {
	mu    sync.Mutex
	chain []*x509.Certificate
	conn  net.Conn
	idle  bool // between requests
}

func (a *connAuth) set(chain []*x509.Certificate) {
	a.mu.Lock()
	a.chain = chain
	a.mu.Unlock()
}

func (a *connAuth) get() []*x509.Certificate {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.chain
}

// connTable finds a connection's connAuth from the raw connection the TLS
// layer sees.
type connTable struct {
	mu sync.Mutex
	m  map[net.Conn]*connAuth
}

func (t *connTable) get(c net.Conn) *connAuth {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[c]
}

type connAuthKey struct{}

func (s *Server) connContext(ctx context.Context, c net.Conn) context.Context {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return ctx
	}
	a := &connAuth{conn: c}
	s.conns.mu.Lock()
	s.conns.m[tc.NetConn()] = a
	s.conns.mu.Unlock()
	return context.WithValue(ctx, connAuthKey{}, a)
}

func (s *Server) connState(c net.Conn, st http.ConnState) {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return
	}
	s.conns.mu.Lock()
	defer s.conns.mu.Unlock()
	switch st {
	case http.StateClosed, http.StateHijacked:
		delete(s.conns.m, tc.NetConn())
	case http.StateIdle, http.StateActive:
		if a := s.conns.m[tc.NetConn()]; a != nil {
			a.mu.Lock()
			a.idle = st == http.StateIdle
			a.mu.Unlock()
		}
	}
}

// CloseClients closes the idle connections of the clients whose verified
// chain refuse rejects (revoked ones, say), and returns how many. A
// connection in the middle of a request finishes it; the API must refuse
// its next one.
func (s *Server) CloseClients(refuse func(chain []*x509.Certificate) bool) int {
	s.conns.mu.Lock()
	var victims []net.Conn
	for _, a := range s.conns.m {
		a.mu.Lock()
		if a.chain != nil && a.idle && refuse(a.chain) {
			victims = append(victims, a.conn)
		}
		a.mu.Unlock()
	}
	s.conns.mu.Unlock()
	for _, c := range victims {
		c.Close()
	}
	return len(victims)
}

// ServeAPI serves the API on l (a plain TCP listener; admission control
// and TLS are added here).
func (s *Server) ServeAPI(l net.Listener) {
	s.serve(s.api, tls.NewListener(s.apiConns.wrap(l), s.tlsConfig()), "api")
}

// ServeHealth serves the health handler over plain HTTP on l (admission
// control is added here).
func (s *Server) ServeHealth(l net.Listener) error {
	if s.health == nil {
		return errors.New("listener: no health handler")
	}
	s.serve(s.health, s.healthConns.wrap(l), "health")
	return nil
}

func (s *Server) serve(srv *http.Server, l net.Listener, name string) {
	s.log.Info("listening", "listener", name, "addr", l.Addr().String())
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.errOnce.Do(func() { s.errc <- fmt.Errorf("listener: %s listener %s: %w", name, l.Addr(), err) })
		}
	}()
}

// AdmissionStats reports what admission control did so far.
func (s *Server) AdmissionStats() AdmissionStats {
	return AdmissionStats{API: s.apiConns.stats(), Health: s.healthConns.stats(), Handshakes: s.handshakes.stats(), Paced: s.pace.stats()}
}

// Err delivers the first error of a listener that stopped by itself.
func (s *Server) Err() <-chan error { return s.errc }

// Shutdown stops accepting, waits for requests in flight until ctx ends,
// then closes what is left.
func (s *Server) Shutdown(ctx context.Context) error {
	var first error
	for _, srv := range []*http.Server{s.api, s.health} {
		if srv == nil {
			continue
		}
		if err := srv.Shutdown(ctx); err != nil {
			srv.Close()
			if first == nil {
				first = fmt.Errorf("listener: shutdown: %w (connections still open were closed)", err)
			}
		}
	}
	s.wg.Wait()
	return first
}

// VerifiedChain returns the client's verified certificate chain (leaf
// first), or nil when the client presented none.
func VerifiedChain(r *http.Request) []*x509.Certificate {
	if a, ok := r.Context().Value(connAuthKey{}).(*connAuth); ok {
		return a.get()
	}
	return nil
}
