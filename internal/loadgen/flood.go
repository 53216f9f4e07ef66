// Package loadgen generates load for brokerd's benchmarks: Flood plays an
// unauthenticated host on the LAN (full TLS handshakes, bare connections,
// GET /health, from one source address), Load plays certified clients
// posting requests over kept-alive mutual-TLS connections without
// backing off. Both are bounded in count and time and return counts, for
// benchmarks to turn into ratios; neither makes a claim about time
// itself.
//
// It imports nothing of the module, so that any package's tests may use
// it.
package loadgen

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// FloodOptions shapes and bounds a Flood.
type FloodOptions struct {
	// Source is the local IP address the flood comes from (127.0.0.2,
	// say, to stand apart from clients on 127.0.0.1); empty: the
	// system's choice.
	Source string
	// Handshakes, Conns and Health are the numbers of concurrent
	// workers of each kind; at least one must be positive.
	//
	// A handshake worker opens a connection, has a full TLS handshake
	// (no session is ever resumed) and hangs up. A connection worker
	// opens a TCP connection and closes it at once, or holds it (see
	// HoldConns). A health worker sends GET HealthURL over a kept-alive
	// connection, again and again.
	Handshakes, Conns, Health int
	// Count bounds the attempts of all workers together, Duration the
	// time; at least one must be set. The flood also ends with ctx.
	Count    int
	Duration time.Duration
	// TLS is the client configuration of the handshakes and of HTTPS
	// health requests (server name, versions, roots); nil: any server
	// certificate is accepted. Its session cache is ignored by
	// handshake workers.
	TLS *tls.Config
	// AbortAfterServerHello makes handshake workers send a ClientHello
	// (made once, then replayed: it offers no session) and hang up as
	// soon as the server's first handshake record arrives. The server
	// has done its signing work by then (or refused it): crypto/tls
	// sends its first flight at once, the ServerHello with the signed
	// CertificateVerify (TLS 1.3) or ServerKeyExchange (TLS 1.2), or
	// with the alert of a refused signature. Only the server's counters
	// tell which.
	AbortAfterServerHello bool
	// HoldConns makes connection workers keep each connection open
	// until the server closes it or the flood ends.
	//
	// Handshake and connection workers hang up with a TCP reset, as a
	// flooder would: no TIME_WAIT is left to use up the source
	// address's ports.
	HoldConns bool
	// HealthURL is what health workers GET; default
	// "https://TARGET/health".
	HealthURL string
	// Timeout bounds one attempt; default 10 s.
	Timeout time.Duration
	// Opened, when set, is called each time a worker has a new
	// connection open, with the worker's kind (KindHandshake, KindConn,
	// KindHealth), from the worker's goroutine: a benchmark can wait
	// for the flood to be in full swing.
	Opened func(kind string)
}

// The kinds of flood workers, as Opened names them.
const (
	KindHandshake = "handshake"
	KindConn      = "conn"
	KindHealth    = "health"
)

// FloodCounts counts the attempts of one kind of worker. Attempts =
// OK + Refused + Failed + Errors + Cut.
type FloodCounts struct {
	// Attempts counts the attempts started.
	Attempts int64
	// OK counts attempts that got what they asked for: a completed
	// handshake (a ServerHello when aborting), a connection opened (and
	// held until the end when holding), a 2xx answer to GET /health.
	OK int64
	// Refused counts attempts the server turned down at the transport:
	// the connection reset or closed before an answer, a TLS alert.
	Refused int64
	// Failed counts HTTP answers other than 2xx; Statuses has them all
	// by status.
	Failed   int64
	Statuses map[int]int64
	// Errors counts other failures: timeouts, dial errors, malformed
	// answers; FirstError is the first of them, for diagnosis.
	Errors     int64
	FirstError error
	// Cut counts attempts that ended after the flood (interrupted, most
	// of them).
	Cut int64
}

// FloodResult is what a Flood did.
type FloodResult struct {
	Handshakes, Conns, Health FloodCounts
	// Elapsed is the flood's duration, until its last worker stopped.
	Elapsed time.Duration
}

// counts is FloodCounts under construction.
type counts struct {
	attempts, ok, refused, failed, errors, cut atomic.Int64
	mu                                         sync.Mutex
	statuses                                   map[int]int64
	firstError                                 error
}

// error counts a failure that is not a refusal.
func (c *counts) error(err error) {
	c.errors.Add(1)
	c.mu.Lock()
	if c.firstError == nil {
		c.firstError = err
	}
	c.mu.Unlock()
}

func (c *counts) status(code int) {
	c.mu.Lock()
	if c.statuses == nil {
		c.statuses = map[int]int64{}
	}
	c.statuses[code]++
	c.mu.Unlock()
}

func (c *counts) result() FloodCounts {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := FloodCounts{Attempts: c.attempts.Load(), OK: c.ok.Load(), Refused: c.refused.Load(), Failed: c.failed.Load(),
		Errors: c.errors.Load(), FirstError: c.firstError, Cut: c.cut.Load()}
	if c.statuses != nil {
		r.Statuses = map[int]int64{}
		for k, v := range c.statuses {
			r.Statuses[k] = v
		}
	}
	return r
}

// outcome files the end of one attempt under its kind: an attempt that
// ended after the flood is cut, whatever its outcome.
func (c *counts) outcome(ctx context.Context, err error) {
	switch {
	case ended(ctx):
		c.cut.Add(1)
	case err == nil:
		c.ok.Add(1)
	case Refusal(err):
		c.refused.Add(1)
	default:
		c.error(err)
	}
}

// Refusal tells whether err is a server's refusal at the transport: the
// connection reset or closed under the client, or a TLS alert.
func Refusal(err error) bool {
	var alert tls.AlertError // from serverHello
	var op *net.OpError      // crypto/tls reports an alert received as a "remote error"
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.As(err, &alert) || errors.As(err, &op) && op.Op == "remote error"
}

// ended tells whether a run's context ended, or its deadline passed: a
// dial or read cut by that deadline may return before the context's
// timer marks it done, and a worker must not take it for a failure, nor
// start again.
func ended(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	d, ok := ctx.Deadline()
	return ok && !time.Now().Before(d)
}

// tickets hands out the attempts a run may make.
type tickets struct{ left atomic.Int64 }

func newTickets(n int) *tickets {
	t := &tickets{}
	if n <= 0 {
		t.left.Store(math.MaxInt64)
	} else {
		t.left.Store(int64(n))
	}
	return t
}

func (t *tickets) take() bool { return t.left.Add(-1) >= 0 }

// dialer dials from source, if set.
func dialer(source string, timeout time.Duration) (*net.Dialer, error) {
	d := &net.Dialer{Timeout: timeout}
	if source != "" {
		ip := net.ParseIP(source)
		if ip == nil {
			return nil, fmt.Errorf("source address %q is not an IP address", source)
		}
		d.LocalAddr = &net.TCPAddr{IP: ip}
	}
	return d, nil
}

// Flood floods target (host:port) from one source address, as opts says,
// until its count or its time is used up or ctx ends. An error means the
// flood could not start; failures of attempts are counted.
func Flood(ctx context.Context, target string, opts FloodOptions) (FloodResult, error) {
	if opts.Handshakes < 0 || opts.Conns < 0 || opts.Health < 0 || opts.Handshakes+opts.Conns+opts.Health == 0 {
		return FloodResult{}, errors.New("loadgen: flood: no workers (set Handshakes, Conns or Health)")
	}
	if opts.Count <= 0 && opts.Duration <= 0 {
		return FloodResult{}, errors.New("loadgen: flood: unbounded (set Count or Duration)")
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.HealthURL == "" {
		opts.HealthURL = "https://" + target + "/health"
	}
	base := &tls.Config{InsecureSkipVerify: true}
	if opts.TLS != nil {
		base = opts.TLS.Clone()
	}
	d, err := dialer(opts.Source, opts.Timeout)
	if err != nil {
		return FloodResult{}, fmt.Errorf("loadgen: flood: %w", err)
	}
	var hello []byte
	if opts.Handshakes > 0 && opts.AbortAfterServerHello {
		if hello, err = clientHello(base, target); err != nil {
			return FloodResult{}, fmt.Errorf("loadgen: flood: make a ClientHello: %w", err)
		}
	}
	if opts.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, opts.Duration)
		defer cancel()
	}
	f := &flood{target: target, opts: opts, dialer: d, base: base, tls: base.Clone(), hello: hello, tickets: newTickets(opts.Count)}
	f.tls.ClientSessionCache, f.tls.SessionTicketsDisabled = nil, true
	if f.tls.ServerName == "" {
		f.tls.ServerName, _, _ = net.SplitHostPort(target)
	}

	start := time.Now()
	var wg sync.WaitGroup
	for _, kind := range []struct {
		n      int
		worker func() func(context.Context)
	}{
		{opts.Handshakes, func() func(context.Context) { return f.handshake }},
		{opts.Conns, func() func(context.Context) { return f.conn }},
		{opts.Health, f.healthWorker},
	} {
		for range kind.n {
			work := kind.worker()
			wg.Go(func() {
				for !ended(ctx) && f.tickets.take() {
					work(ctx)
				}
			})
		}
	}
	wg.Wait()
	for _, tr := range f.transports {
		tr.CloseIdleConnections()
	}
	return FloodResult{Handshakes: f.handshakes.result(), Conns: f.conns.result(), Health: f.healths.result(),
		Elapsed: time.Since(start)}, nil
}

type flood struct {
	target     string
	opts       FloodOptions
	dialer     *net.Dialer
	base       *tls.Config // as given
	tls        *tls.Config // for handshakes: no session
	hello      []byte
	transports []*http.Transport
	tickets    *tickets

	handshakes, conns, healths counts
}

func (f *flood) opened(kind string) {
	if f.opts.Opened != nil {
		f.opts.Opened(kind)
	}
}

// handshake has one full handshake, or sends the ClientHello and waits
// for the server's first record.
func (f *flood) handshake(ctx context.Context) {
	f.handshakes.attempts.Add(1)
	actx, cancel := context.WithTimeout(ctx, f.opts.Timeout)
	defer cancel()
	c, err := f.dialer.DialContext(actx, "tcp", f.target)
	if err != nil {
		f.handshakes.outcome(ctx, err)
		return
	}
	defer hangUp(c)
	f.opened(KindHandshake)
	stop := context.AfterFunc(actx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	if f.hello == nil {
		f.handshakes.outcome(ctx, tls.Client(c, f.tls).HandshakeContext(actx))
		return
	}
	f.handshakes.outcome(ctx, serverHello(c, f.hello))
}

// hangUp closes c with a reset: no TIME_WAIT is left on the client, so
// a flood from one source address does not run out of ports.
func hangUp(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// serverHello sends hello on c and reads the server's first record: a
// handshake record is the ServerHello, an alert a refusal.
func serverHello(c net.Conn, hello []byte) error {
	if _, err := c.Write(hello); err != nil {
		return err
	}
	var hdr [5]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return err
	}
	switch hdr[0] {
	case 22: // handshake
		return nil
	case 21: // alert
		var alert [2]byte
		io.ReadFull(c, alert[:])
		return tls.AlertError(alert[1])
	default:
		return fmt.Errorf("server's first record has type %d", hdr[0])
	}
}

// clientHello makes the first record of a handshake with cfg (no
// session offered).
func clientHello(cfg *tls.Config, target string) ([]byte, error) {
	cfg = cfg.Clone()
	cfg.ClientSessionCache, cfg.SessionTicketsDisabled = nil, true
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(target)
		if err != nil {
			return nil, err
		}
		cfg.ServerName = host
	}
	client, server := net.Pipe()
	defer server.Close()
	go func() {
		defer client.Close()
		tls.Client(client, cfg).Handshake() // fails when server closes: only its first record matters
	}()
	var hdr [5]byte
	if _, err := io.ReadFull(server, hdr[:]); err != nil {
		return nil, err
	}
	rec := make([]byte, 5+int(hdr[3])<<8+int(hdr[4]))
	copy(rec, hdr[:])
	if _, err := io.ReadFull(server, rec[5:]); err != nil {
		return nil, err
	}
	return rec, nil
}

// conn opens a connection and closes it, or holds it until the server
// closes it or the flood ends. A held connection is not bound by
// Timeout.
func (f *flood) conn(ctx context.Context) {
	f.conns.attempts.Add(1)
	dctx, cancel := context.WithTimeout(ctx, f.opts.Timeout)
	defer cancel()
	c, err := f.dialer.DialContext(dctx, "tcp", f.target)
	if err != nil {
		f.conns.outcome(ctx, err)
		return
	}
	defer hangUp(c)
	f.opened(KindConn)
	if !f.opts.HoldConns {
		f.conns.outcome(ctx, nil)
		return
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	_, err = c.Read(make([]byte, 1))
	switch {
	case ended(ctx): // held to the end
		f.conns.ok.Add(1)
	case err == nil:
		f.conns.error(errors.New("the server spoke first")) // not what the flood is for
	default:
		f.conns.outcome(ctx, err)
	}
}

// healthWorker returns the work of a health worker: on a connection of
// its own, kept alive (a shared pool would open more than one per
// worker).
func (f *flood) healthWorker() func(context.Context) {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := f.dialer.DialContext(ctx, network, addr)
			if err == nil {
				f.opened(KindHealth)
			}
			return c, err
		},
		TLSClientConfig: f.base.Clone(), MaxIdleConnsPerHost: 1, ForceAttemptHTTP2: false, DisableCompression: true,
		// The next request waits for the connection to come back: net/http
		// returns it to the pool after the body is read, asynchronously,
		// and would dial another one meanwhile.
		MaxConnsPerHost: 1,
	}
	f.transports = append(f.transports, tr)
	client := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return func(ctx context.Context) { f.health(ctx, client) }
}

// health sends one GET HealthURL.
func (f *flood) health(ctx context.Context, client *http.Client) {
	f.healths.attempts.Add(1)
	actx, cancel := context.WithTimeout(ctx, f.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodGet, f.opts.HealthURL, nil)
	if err != nil {
		f.healths.error(err)
		return
	}
	resp, err := client.Do(req)
	if err != nil {
		f.healths.outcome(ctx, err)
		return
	}
	_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if err != nil || ended(ctx) {
		f.healths.outcome(ctx, err)
		return
	}
	f.healths.status(resp.StatusCode)
	switch {
	case resp.StatusCode/100 == 2:
		f.healths.ok.Add(1)
	default:
		f.healths.failed.Add(1)
	}
}
