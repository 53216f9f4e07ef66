// Package netstack owns brokerd's network edges: the mutual-TLS API
// listener and the plain health listener (given addresses or systemd
// sockets), the server TLS configuration with live reload, client
// certificate verification, and (for makeRequest) the outbound client. It
// knows nothing of the API it serves: handlers come from outside.
package netstack

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
		return nil, fmt.Errorf("netstack: server certificate: %w", err)
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(chain[0].PublicKey) {
		return nil, fmt.Errorf("netstack: server certificate %s: its public key is not the server key's", certFile)
	}
	cas, err := certs.ReadFile(clientCAFile)
	if err != nil {
		return nil, fmt.Errorf("netstack: client CA: %w", err)
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

// ServerConfig configures the listeners.
type ServerConfig struct {
	// MinVersion is tls.VersionTLS12 or tls.VersionTLS13.
	MinVersion        uint16
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	MaxHeaderBytes    int
	// VerifyConnection, when set, runs after chain verification on every
	// handshake, full or resumed (revocation checks go here).
	VerifyConnection func(tls.ConnectionState) error
	Log              *slog.Logger
}

// Server serves the API over mutual TLS and, optionally, /health over plain
// HTTP. Its TLS material can be replaced while it runs; connections already
// open keep what they negotiated.
type Server struct {
	cfg    ServerConfig
	load   func() (*Material, error)
	tlsCur atomic.Pointer[tls.Config]
	api    *http.Server
	health *http.Server
	log    *slog.Logger

	wg      sync.WaitGroup
	errOnce sync.Once
	errc    chan error
}

// NewServer loads the TLS material with load (again on every Reload) and
// prepares the servers. health may be nil.
func NewServer(cfg ServerConfig, load func() (*Material, error), api, health http.Handler) (*Server, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.MinVersion == 0 {
		cfg.MinVersion = tls.VersionTLS12
	}
	s := &Server{cfg: cfg, load: load, log: cfg.Log, errc: make(chan error, 1)}
	if err := s.Reload(); err != nil {
		return nil, err
	}
	errLog := slog.NewLogLogger(cfg.Log.Handler(), slog.LevelDebug)
	s.api = &http.Server{
		Handler:           api,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          errLog,
	}
	if health != nil {
		s.health = &http.Server{Handler: health, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 5 * time.Second,
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
		// not verify fails the handshake.
		ClientAuth:       tls.VerifyClientCertIfGiven,
		ClientCAs:        m.ClientCAs,
		VerifyConnection: s.cfg.VerifyConnection,
		NextProtos:       []string{"h2", "http/1.1"},
	})
	s.log.Info("tls material loaded", "server", m.Cert.Leaf.Subject.String(),
		"not_after", m.Cert.Leaf.NotAfter.UTC().Format(time.RFC3339), "client_cas", len(m.CAs))
	return nil
}

// tlsConfig is the listener's configuration: every handshake takes the
// material current at that moment.
func (s *Server) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion: s.cfg.MinVersion,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.tlsCur.Load(), nil
		},
	}
}

// ServeAPI serves the API on l (a plain TCP listener; TLS is added here).
func (s *Server) ServeAPI(l net.Listener) { s.serve(s.api, tls.NewListener(l, s.tlsConfig()), "api") }

// ServeHealth serves the health handler over plain HTTP on l.
func (s *Server) ServeHealth(l net.Listener) error {
	if s.health == nil {
		return errors.New("netstack: no health handler")
	}
	s.serve(s.health, l, "health")
	return nil
}

func (s *Server) serve(srv *http.Server, l net.Listener, name string) {
	s.log.Info("listening", "listener", name, "addr", l.Addr().String())
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.errOnce.Do(func() { s.errc <- fmt.Errorf("netstack: %s listener %s: %w", name, l.Addr(), err) })
		}
	}()
}

// Err delivers the first error of a listener that stopped by itself.
func (s *Server) Err() <-chan error { return s.errc }

// Shutdown stops accepting, waits for requests in flight until ctx ends,
// then closes what is left.
func (s *Server) Shutdown(ctx context.Context) error {
	var errs []error
	for _, srv := range []*http.Server{s.api, s.health} {
		if srv == nil {
			continue
		}
		if err := srv.Shutdown(ctx); err != nil {
			errs = append(errs, err, srv.Close())
		}
	}
	s.wg.Wait()
	return errors.Join(errs...)
}

// VerifiedChain returns the client's verified certificate chain (leaf
// first), or nil when the client presented none.
func VerifiedChain(r *http.Request) []*x509.Certificate {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		return nil
	}
	return r.TLS.VerifiedChains[0]
}
