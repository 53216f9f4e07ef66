// Package bank calls banks for makeRequest: connection pools per QWAC,
// TLS version and origin with session resumption (so that a full handshake,
// one TPM signature, is rare), the trust store for banks' certificates, the
// address guard (no loopback, private or link-local destination unless a
// rule allows it, checked at dial time after DNS) and size and time limits.
// It knows nothing of the API that asks for the calls.
package bank

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"container/list"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptrace"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/brokerd/brokerd/internal/origin"
)

// Config configures calls to banks. Zero fields take DefaultConfig's
// values.
type Config struct {
	// Timeout bounds a whole call, redirects included.
	Timeout time.Duration
	// MaxBody bounds a response body, after decompression.
	MaxBody int64
	// MaxHeaderBytes bounds a response's header block.
	MaxHeaderBytes int64
	// MaxRedirects bounds the redirects followed.
	MaxRedirects int
	// MaxIdlePerPool bounds the idle connections kept per QWAC, TLS
	// version and origin.
	MaxIdlePerPool int
	// MaxPools bounds the pools kept (one per QWAC, TLS version, origin
	// and rule); the least recently used goes first.
	MaxPools int
	// IdleTimeout closes idle connections.
	IdleTimeout time.Duration
	// UserAgent is sent when the client sets none.
	UserAgent string
	// CredentialHeaders are dropped, with Cookie and Proxy-*, when a
	// redirect leads to another origin.
	CredentialHeaders []string
	// Resolve and Dial reach the network; tests inject their own. Defaults:
	// the system resolver and a TCP dialer.
	Resolve func(ctx context.Context, host string) ([]net.IP, error)
	Dial    func(ctx context.Context, network, addr string) (net.Conn, error)
	Log     *slog.Logger
}

// DefaultConfig is the bank client's default configuration.
func DefaultConfig() Config {
	return Config{
		Timeout:           60 * time.Second,
		MaxBody:           32 << 20,
		MaxHeaderBytes:    64 << 10,
		MaxRedirects:      10,
		MaxIdlePerPool:    32,
		MaxPools:          256,
		IdleTimeout:       90 * time.Second,
		UserAgent:         "brokerd",
		CredentialHeaders: []string{"Authorization", "Cookie", "X-Api-Key", "Signature", "Digest", "TPP-Signature-Certificate"},
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Timeout == 0 {
		c.Timeout = d.Timeout
	}
	if c.MaxBody == 0 {
		c.MaxBody = d.MaxBody
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = d.MaxHeaderBytes
	}
	if c.MaxRedirects == 0 {
		c.MaxRedirects = d.MaxRedirects
	}
	if c.MaxIdlePerPool == 0 {
		c.MaxIdlePerPool = d.MaxIdlePerPool
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = d.IdleTimeout
	}
	if c.MaxPools == 0 {
		c.MaxPools = d.MaxPools
	}
	if c.CredentialHeaders == nil {
		c.CredentialHeaders = d.CredentialHeaders
	}
	if c.Resolve == nil {
		c.Resolve = func(ctx context.Context, host string) ([]net.IP, error) {
			return net.DefaultResolver.LookupIP(ctx, "ip", host)
		}
	}
	if c.Dial == nil {
		c.Dial = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return c
}

// ErrorKind says why a call to a bank failed.
type ErrorKind int

// Kinds of Error.
const (
	// Destination: the address is loopback, private or link-local, or a
	// hop's origin is not allowed.
	Destination ErrorKind = iota + 1
	// Unreachable: no connection, or the TLS handshake failed.
	Unreachable
	// Untrusted: the bank's certificate does not verify.
	Untrusted
	// Timeout: the call took longer than its budget.
	Timeout
	// TooManyRedirects: more redirects than allowed.
	TooManyRedirects
	// TooLarge: the response breaks a size limit.
	TooLarge
	// Protocol: the bank's answer cannot be read.
	Protocol
)

// Error is a failed call to a bank.
type Error struct {
	Kind ErrorKind
	Err  error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

func bankErr(kind ErrorKind, format string, args ...any) *Error {
	return &Error{Kind: kind, Err: fmt.Errorf(format, args...)}
}

// Request is one call to a bank.
type Request struct {
	Method string
	URL    *url.URL
	// Header is sent as given; names keep their case. Values are raw bytes
	// (latin-1 already applied).
	Header [][2]string
	Body   []byte
	// Cert is the QWAC, nil for none; CertID names it for connection
	// reuse (a key id and its chain's fingerprint).
	Cert   *tls.Certificate
	CertID string
	// TLSVersion pins the TLS version (tls.VersionTLS12 or 13); 0 allows
	// both.
	TLSVersion      uint16
	FollowRedirects bool
	// CheckHop approves the first URL and every redirect target, and says
	// whether that hop may reach private addresses; nil allows every URL
	// on public addresses.
	CheckHop func(u *url.URL) (Hop, error)
}

// QWACError is a failure to sign a handshake with the QWAC (a busy or
// unavailable TPM); it unwraps to the signer's error.
type QWACError struct{ Err error }

func (e *QWACError) Error() string { return "sign the TLS handshake with the QWAC: " + e.Err.Error() }
func (e *QWACError) Unwrap() error { return e.Err }

// Response is the bank's answer.
type Response struct {
	Status int
	// Header is in wire order with the original case; repeated names kept.
	Header      [][2]string
	Body        []byte // decompressed
	ContentType string
	// Certificate is the bank's leaf certificate; nil over plain HTTP.
	Certificate *x509.Certificate
}

// Client calls banks: one connection pool per QWAC, TLS version and
// origin, with keep-alive and TLS session resumption, so that a full
// handshake (a TPM signature for a TPM-held QWAC) is rare. Every address is
// checked at dial time, after DNS. Safe for concurrent use.
type Client struct {
	cfg   Config
	trust *TrustStore

	// pools holds the connection pools, most recently used first, at
	// most MaxPools of them.
	mu    sync.Mutex
	pools map[poolKey]*list.Element // of *pool
	lru   list.List

	full, resumed atomic.Int64
}

type poolKey struct {
	cert    string
	version uint16
	origin  string
	hop     Hop
}

type pool struct {
	key poolKey
	t   *http.Transport
}

// Hop is what the policy says about one URL of a call: whether it may
// reach private addresses, and the rule that said so.
type Hop struct {
	AllowPrivate bool
	// Rule names the rule that allowed the hop, for error messages.
	Rule string
}

// refusal says why a private address is refused, naming the rule.
func (h Hop) refusal() string {
	if h.Rule == "" {
		return "no rule allows private addresses"
	}
	return fmt.Sprintf("rule %q does not allow private addresses (policy allow --allow-private, with this exact origin)", h.Rule)
}

// New makes the bank client; trust verifies banks' certificates.
func New(cfg Config, trust *TrustStore) *Client {
	return &Client{cfg: cfg.withDefaults(), trust: trust, pools: map[poolKey]*list.Element{}}
}

// Handshakes reports full and resumed TLS handshakes made so far.
func (o *Client) Handshakes() (full, resumed int64) { return o.full.Load(), o.resumed.Load() }

// Pools reports how many connection pools are kept.
func (o *Client) Pools() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.lru.Len()
}

// CloseIdle closes idle connections of every pool.
func (o *Client) CloseIdle() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for e := o.lru.Front(); e != nil; e = e.Next() {
		e.Value.(*pool).t.CloseIdleConnections()
	}
}

// pool returns the pool for a QWAC (cert, named certID), TLS version,
// URL and hop, making it when needed and dropping the least recently
// used one beyond MaxPools. Its dialers capture only what they need.
func (o *Client) pool(certID string, cert *tls.Certificate, version uint16, u *url.URL, hop Hop) *pool {
	k := poolKey{cert: certID, version: version, origin: origin.Of(u).String(), hop: hop}
	o.mu.Lock()
	defer o.mu.Unlock()
	if e := o.pools[k]; e != nil {
		o.lru.MoveToFront(e)
		return e.Value.(*pool)
	}
	sessions := tls.NewLRUClientSessionCache(64)
	t := &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			c, err := o.dial(ctx, addr, k.hop)
			if err != nil {
				return nil, err
			}
			return &recordingConn{Conn: c, max: int(o.cfg.MaxHeaderBytes)}, nil
		},
		DialTLSContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return o.dialTLS(ctx, addr, k, cert, sessions)
		},
		MaxIdleConnsPerHost:    o.cfg.MaxIdlePerPool,
		IdleConnTimeout:        o.cfg.IdleTimeout,
		DisableCompression:     true,
		MaxResponseHeaderBytes: o.cfg.MaxHeaderBytes,
		// HTTP/1.1 only, as the reference speaks to banks.
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{},
	}
	p := &pool{key: k, t: t}
	o.pools[k] = o.lru.PushFront(p)
	for o.lru.Len() > o.cfg.MaxPools {
		old := o.lru.Remove(o.lru.Back()).(*pool)
		delete(o.pools, old.key)
		old.t.CloseIdleConnections()
	}
	return p
}

// dial connects to addr after checking every address it stands for. A
// hop whose rule allows private addresses may reach them, by literal
// address or by name; the name is pinned to the addresses checked here,
// so a DNS answer that changes later (rebinding) gains nothing. Errors
// name the host, never what it resolved to or which DNS server answered.
func (o *Client) dial(ctx context.Context, addr string, hop Hop) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, bankErr(Unreachable, "bad address %q", addr)
	}
	ips := []net.IP{net.ParseIP(host)}
	if ips[0] == nil {
		if ips, err = o.cfg.Resolve(ctx, host); err != nil {
			return nil, bankErr(Unreachable, "cannot resolve %s", host)
		}
		if len(ips) == 0 {
			return nil, bankErr(Unreachable, "%s has no address", host)
		}
	}
	if !hop.AllowPrivate {
		for _, ip := range ips {
			if Blocked(ip) {
				return nil, bankErr(Destination, "%s is a loopback, private or link-local address (or another special-purpose one), and %s", host, hop.refusal())
			}
		}
	}
	var failures []string
	for _, ip := range ips {
		c, err := o.cfg.Dial(ctx, "tcp", net.JoinHostPort(ip.String(), port))
		if err == nil {
			return c, nil
		}
		failures = append(failures, err.Error())
	}
	return nil, bankErr(Unreachable, "cannot connect to %s: %s", addr, strings.Join(failures, "; "))
}

// signerErr keeps the error of a QWAC signature during a handshake:
// crypto/tls reports it as a string, and a busy TPM must stay a busy TPM.
type signerErr struct {
	crypto.Signer
	err *error
}

func (s signerErr) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	sig, err := s.Signer.Sign(rand, digest, opts)
	if err != nil {
		*s.err = err
	}
	return sig, err
}

func (o *Client) dialTLS(ctx context.Context, addr string, k poolKey, cert *tls.Certificate, sessions tls.ClientSessionCache) (net.Conn, error) {
	raw, err := o.dial(ctx, addr, k.hop)
	if err != nil {
		return nil, err
	}
	host, _, _ := net.SplitHostPort(addr)
	var signErr error
	cfg := &tls.Config{
		ServerName: host,
		// Verified below against the trust store in force at this moment,
		// so an added bank CA counts for the next connection.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return o.trust.Verify(k.origin, host, cs.PeerCertificates)
		},
		ClientSessionCache: sessions,
		MinVersion:         tls.VersionTLS12,
		NextProtos:         []string{"http/1.1"},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if cert == nil {
				return &tls.Certificate{}, nil
			}
			c := *cert
			if s, ok := c.PrivateKey.(crypto.Signer); ok {
				c.PrivateKey = signerErr{Signer: s, err: &signErr}
			}
			return &c, nil
		},
	}
	if k.version != 0 {
		cfg.MinVersion, cfg.MaxVersion = k.version, k.version
	}
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		var ue *UntrustedError
		switch {
		case signErr != nil:
			return nil, &QWACError{Err: signErr}
		case errors.Is(err, context.DeadlineExceeded):
			return nil, bankErr(Timeout, "TLS handshake with %s timed out", addr)
		case errors.As(err, &ue):
			return nil, &Error{Kind: Untrusted, Err: ue}
		}
		return nil, bankErr(Unreachable, "TLS handshake with %s: %v", addr, err)
	}
	st := tc.ConnectionState()
	if st.DidResume {
		o.resumed.Add(1)
	} else {
		o.full.Add(1)
	}
	return &recordingConn{Conn: tc, tls: &st, max: int(o.cfg.MaxHeaderBytes)}, nil
}

// recordingConn keeps the raw bytes of each response's header block, so
// that headers can be returned in wire order with their original case
// (net/http keeps a map of canonical names). The capture belongs to one
// round trip: the first write of a request after a response was read
// starts it anew, whether or not anyone read the last one (a redirect
// dropped, say), so no response's headers ever reach another request.
type recordingConn struct {
	net.Conn
	tls *tls.ConnectionState
	max int

	mu      sync.Mutex
	buf     []byte
	reading bool // a response is being read: the next write is a new request
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.reading {
		c.buf, c.reading = c.buf[:0], false
	}
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.reading = true
	if len(c.buf) < c.max+4 {
		c.buf = append(c.buf, p[:min(n, c.max+4-len(c.buf))]...)
	}
	c.mu.Unlock()
	return n, err
}

// header returns the header fields of the response just read, in order.
func (c *recordingConn) header() [][2]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	block := c.buf
	for {
		end := bytes.Index(block, []byte("\r\n\r\n"))
		if end < 0 || !informational(block) {
			if end >= 0 {
				block = block[:end]
			}
			break
		}
		block = block[end+4:] // a 1xx answer (103 Early Hints) precedes the final one
	}
	lines := strings.Split(string(block), "\r\n")
	var out [][2]string
	for _, l := range lines[1:] { // the status line first
		if l == "" {
			continue
		}
		if (l[0] == ' ' || l[0] == '\t') && len(out) > 0 { // obsolete line folding
			out[len(out)-1][1] += " " + strings.TrimSpace(l)
			continue
		}
		name, value, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		out = append(out, [2]string{name, strings.Trim(value, " \t")})
	}
	return out
}

// informational reports whether a header block is a 1xx answer's.
func informational(block []byte) bool {
	status, _, _ := bytes.Cut(block, []byte("\r\n"))
	f := bytes.Fields(status)
	return len(f) >= 2 && len(f[1]) == 3 && f[1][0] == '1'
}

// hopByHop headers concern one connection and are never forwarded.
var hopByHop = map[string]bool{"Connection": true, "Keep-Alive": true, "Proxy-Connection": true, "Transfer-Encoding": true,
	"Te": true, "Trailer": true, "Upgrade": true, "Proxy-Authorization": true, "Content-Length": true}

// Do makes the call, following redirects when asked.
func (o *Client) Do(ctx context.Context, r *Request) (*Response, error) {
	ctx, cancel := context.WithTimeout(ctx, o.cfg.Timeout)
	defer cancel()
	jar, _ := cookiejar.New(nil) // cookies live for this call's redirect chain only
	method, u, body := r.Method, r.URL, r.Body
	header := r.Header
	for hops := 0; ; hops++ {
		var hop Hop
		if r.CheckHop != nil {
			var err error
			if hop, err = r.CheckHop(u); err != nil {
				return nil, err
			}
		}
		resp, conn, err := o.roundTrip(ctx, r, hop, method, u, header, body, jar)
		if err == nil && ctx.Err() != nil {
			// An answer that raced the deadline is too late all the same.
			resp.Body.Close()
			err = ctx.Err()
		}
		if err != nil {
			return nil, o.callError(ctx, err)
		}
		loc := resp.Header.Get("Location")
		if !r.FollowRedirects || loc == "" || !isRedirect(resp.StatusCode) {
			return o.readResponse(ctx, resp, conn)
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, o.cfg.MaxBody))
		resp.Body.Close()
		if hops+1 > o.cfg.MaxRedirects {
			return nil, bankErr(TooManyRedirects, "more than %d redirects", o.cfg.MaxRedirects)
		}
		next, err := u.Parse(loc)
		if err != nil || (next.Scheme != "https" && next.Scheme != "http") {
			return nil, bankErr(Protocol, "the bank redirects to %q, which is no http(s) URL", loc)
		}
		jar.SetCookies(u, resp.Cookies())
		// aiohttp's rules: 303 (not HEAD), and 301/302 after POST, become
		// a GET without body; others repeat the request.
		if (resp.StatusCode == 303 && method != http.MethodHead) || ((resp.StatusCode == 301 || resp.StatusCode == 302) && method == http.MethodPost) {
			method, body = http.MethodGet, nil
		}
		if origin.Of(next).String() != origin.Of(u).String() {
			header = o.withoutCredentials(header)
		}
		u = next
	}
}

func isRedirect(code int) bool {
	return code == 301 || code == 302 || code == 303 || code == 307 || code == 308
}

// withoutCredentials drops the headers that must not follow a redirect to
// another origin: cookies, proxy credentials and the configured
// credential headers.
func (o *Client) withoutCredentials(h [][2]string) [][2]string {
	var out [][2]string
	for _, kv := range h {
		name := http.CanonicalHeaderKey(kv[0])
		if name == "Cookie" || strings.HasPrefix(name, "Proxy-") || slices.ContainsFunc(o.cfg.CredentialHeaders, func(c string) bool {
			return strings.EqualFold(c, name)
		}) {
			continue
		}
		out = append(out, kv)
	}
	return out
}

func (o *Client) roundTrip(ctx context.Context, r *Request, hop Hop, method string, u *url.URL, header [][2]string, body []byte, jar http.CookieJar) (*http.Response, *recordingConn, error) {
	req := &http.Request{Method: method, URL: u, Header: http.Header{}, Host: HostHeader(u), ProtoMajor: 1, ProtoMinor: 1,
		ContentLength: int64(len(body))}
	req.Body = io.NopCloser(bytes.NewReader(body))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	if len(body) == 0 {
		req.Body = http.NoBody
	}
	has := map[string]bool{}
	for _, kv := range header {
		name := kv[0]
		canon := http.CanonicalHeaderKey(name)
		if hopByHop[canon] {
			continue
		}
		switch canon {
		case "Host":
			continue // always the URL's authority (broker refuses any other)
		case "User-Agent", "Content-Type", "Accept", "Accept-Encoding", "Cookie":
			name = canon // net/http looks for these by their canonical name
		}
		has[canon] = true
		req.Header[name] = []string{kv[1]}
	}
	for name, value := range map[string]string{"Accept": "*/*", "Accept-Encoding": "gzip, deflate",
		"User-Agent": o.cfg.UserAgent, "Content-Type": "application/octet-stream"} {
		if !has[name] && value != "" {
			req.Header[name] = []string{value}
		}
	}
	if !has["User-Agent"] && o.cfg.UserAgent == "" {
		req.Header["User-Agent"] = []string{""} // no Go default either
	}
	if cs := jar.Cookies(u); len(cs) > 0 {
		parts := make([]string, 0, len(cs)+1)
		if v := req.Header.Get("Cookie"); v != "" {
			parts = append(parts, v)
		}
		for _, c := range cs {
			parts = append(parts, c.Name+"="+c.Value)
		}
		req.Header["Cookie"] = []string{strings.Join(parts, "; ")}
	}
	var conn *recordingConn
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		conn, _ = info.Conn.(*recordingConn)
	}}
	resp, err := o.pool(r.CertID, r.Cert, r.TLSVersion, u, hop).t.RoundTrip(req.WithContext(httptrace.WithClientTrace(ctx, trace)))
	if err != nil {
		return nil, nil, err
	}
	return resp, conn, nil
}

// HostHeader is the Host the reference sends for u: its authority without
// a default port.
func HostHeader(u *url.URL) string {
	if p := u.Port(); (u.Scheme == "https" && p == "443") || (u.Scheme == "http" && p == "80") {
		return u.Hostname()
	}
	return u.Host
}

// callError turns a transport error into a Error (or keeps a TPM
// error, which the caller maps itself).
func (o *Client) callError(ctx context.Context, err error) error {
	var (
		be *Error
		qe *QWACError
	)
	switch {
	case errors.As(err, &be):
		return be
	case errors.As(err, &qe):
		return qe
	case ctx.Err() == context.DeadlineExceeded:
		return bankErr(Timeout, "the bank did not answer within %v", o.cfg.Timeout)
	case strings.Contains(err.Error(), "server response headers exceeded"):
		return bankErr(TooLarge, "the bank's response headers exceed %d bytes", o.cfg.MaxHeaderBytes)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return bankErr(Unreachable, "%v", err)
}

// readResponse reads and decompresses the body within the limits.
func (o *Client) readResponse(ctx context.Context, resp *http.Response, conn *recordingConn) (*Response, error) {
	defer resp.Body.Close()
	out := &Response{Status: resp.StatusCode, ContentType: resp.Header.Get("Content-Type")}
	if conn != nil {
		out.Header = conn.header()
		if conn.tls != nil && len(conn.tls.PeerCertificates) > 0 {
			out.Certificate = conn.tls.PeerCertificates[0]
		}
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, o.cfg.MaxBody+1))
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			return nil, bankErr(Timeout, "the bank did not finish its answer within %v", o.cfg.Timeout)
		}
		return nil, bankErr(Protocol, "reading the bank's answer: %v", err)
	}
	if ctx.Err() == context.DeadlineExceeded {
		return nil, bankErr(Timeout, "the bank did not finish its answer within %v", o.cfg.Timeout)
	}
	if int64(len(raw)) > o.cfg.MaxBody {
		return nil, bankErr(TooLarge, "the bank's answer is larger than %d bytes", o.cfg.MaxBody)
	}
	if out.Body, err = o.decode(resp.Header.Values("Content-Encoding"), raw); err != nil {
		return nil, err
	}
	return out, nil
}

// decode undoes Content-Encoding (gzip, deflate), within MaxBody.
func (o *Client) decode(encodings []string, body []byte) ([]byte, error) {
	var list []string
	for _, e := range encodings {
		for _, x := range strings.Split(e, ",") {
			if x = strings.ToLower(strings.TrimSpace(x)); x != "" && x != "identity" {
				list = append(list, x)
			}
		}
	}
	for i := len(list) - 1; i >= 0; i-- {
		var r io.Reader
		switch list[i] {
		case "gzip", "x-gzip":
			zr, err := gzip.NewReader(bytes.NewReader(body))
			if err != nil {
				return nil, bankErr(Protocol, "the bank's gzip answer is corrupt: %v", err)
			}
			r = zr
		case "deflate":
			// Servers send zlib-wrapped or raw deflate; accept both.
			if zr, err := zlib.NewReader(bytes.NewReader(body)); err == nil {
				r = zr
			} else {
				r = flate.NewReader(bytes.NewReader(body))
			}
		default:
			return nil, bankErr(Protocol, "the bank answered with content encoding %q, which brokerd did not ask for", list[i])
		}
		out, err := io.ReadAll(io.LimitReader(r, o.cfg.MaxBody+1))
		if err != nil {
			return nil, bankErr(Protocol, "the bank's %s answer is corrupt: %v", list[i], err)
		}
		if int64(len(out)) > o.cfg.MaxBody {
			return nil, bankErr(TooLarge, "the bank's answer is larger than %d bytes once decompressed", o.cfg.MaxBody)
		}
		body = out
	}
	return body, nil
}
