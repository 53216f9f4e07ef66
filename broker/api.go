// Package broker is brokerd's API: the operations (sign, makeRequest, key
// listing), their HTTP handlers and wire formats, and the mapping of errors
// to answers. The wire format is the reference broker's (Enable Banking's
// eIDAS broker), byte for byte where its clients can tell; where the
// reference answers bad input with a 500 and internals, brokerd answers with
// a precise 4xx and none.
package broker

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/brokerd/brokerd/audit"
	"github.com/brokerd/brokerd/keys"
	"github.com/brokerd/brokerd/netstack/listener"
	"github.com/brokerd/brokerd/policy"
)

// KeyService is what the API needs of the key registry.
type KeyService interface {
	Info(name string) (keys.Info, error)
	Chain(name string) ([]*x509.Certificate, error)
	List() ([]keys.Info, error)
	Sign(ctx context.Context, name string, data []byte, alg keys.SignAlg, h crypto.Hash) ([]byte, keys.SignAlg, error)
	Signer(ctx context.Context, name string) (crypto.Signer, error)
}

// Auditor makes audit records durable.
type Auditor interface {
	Append(ctx context.Context, rec audit.Record) (uint64, error)
}

// Authorizer decides what a client may do.
type Authorizer interface {
	Decide(id policy.Identity, req policy.Request) policy.Decision
	Allowed(id policy.Identity, keyNames []string) bool
}

// DefaultMaxBody bounds request bodies unless Config.MaxBody says
// otherwise.
const DefaultMaxBody = 1 << 20

// Config configures the API.
type Config struct {
	// MaxBody bounds request bodies; larger ones get 413. Default
	// DefaultMaxBody.
	MaxBody int64
	// Health reports whether brokerd can serve: the TPM answers and the
	// state is writable. nil means always healthy.
	Health func(ctx context.Context) error
	// Warnings, when set, lists what an operator should act on before it
	// stops brokerd (a key's certificate about to expire): GET
	// /health?details shows them to clients with a certificate.
	Warnings func() []string
	// Audit records every operation before its answer leaves. Only
	// benchmarks leave it nil, to measure what the audit log costs.
	Audit Auditor
	// CheckClient, when set, is asked on every request whether the
	// client's certificate still stands (it may have been revoked since
	// the connection's handshake).
	CheckClient func(chain []*x509.Certificate) error
	// Identity reads client certificates (which extension carries roles).
	Identity policy.IdentityOptions
	// Observe, when set, hears of every answer of the API, for metrics:
	// the operation, the key (its id; "unknown" for a name that is none;
	// "" when the operation uses no key), the client's common name ("" for
	// none), the status and the time taken.
	Observe func(op, key, client string, status int, d time.Duration)
	// ServerName returns the name clients reach brokerd by, for the
	// Location of redirects (a path with a trailing slash); nil or "": a
	// relative Location. The client's Host header is never used.
	ServerName func() string
	// MaxInFlightPerClient bounds one client's requests in progress;
	// default DefaultMaxInFlightPerClient.
	MaxInFlightPerClient int
	// TPMBusy, when set, reports whether the TPM's queue for clients'
	// operations is full: /sign and the signing helpers are then refused
	// at once, before their body is read.
	TPMBusy func() bool
	// MaxBankCalls bounds the makeRequest calls in progress; default
	// DefaultMaxBankCalls.
	MaxBankCalls int
	// DenialQuota bounds the refusals of one client a minute that are
	// recorded one by one; beyond it they are counted. Default
	// DefaultDenialQuota.
	DenialQuota int
	Log         *slog.Logger
}

// API serves the broker's HTTP interface.
type API struct {
	cfg   Config
	keys  KeyService
	auth  Authorizer
	bank  BankClient
	log   *slog.Logger
	ids   identityCache
	quota *denialQuota
	// inFlight bounds each client's requests in progress; bankCalls
	// holds a token per makeRequest calling a bank.
	inFlight  inFlight
	bankCalls chan struct{}
}

// identityCache remembers the identities of recent client certificates:
// every request of a keep-alive connection presents the same one.
type identityCache struct {
	mu sync.Mutex
	m  map[[32]byte]policy.Identity
}

// maxIdentities bounds the cache; it starts over when full.
const maxIdentities = 1024

func (c *identityCache) of(opts policy.IdentityOptions, chain []*x509.Certificate) policy.Identity {
	h := sha256.New()
	for _, cert := range chain {
		h.Write(cert.Raw)
	}
	var key [32]byte
	h.Sum(key[:0])
	c.mu.Lock()
	defer c.mu.Unlock()
	if id, ok := c.m[key]; ok {
		return id
	}
	if c.m == nil || len(c.m) >= maxIdentities {
		c.m = map[[32]byte]policy.Identity{}
	}
	id := opts.Of(chain)
	c.m[key] = id
	return id
}

// New returns the API over a key registry, a policy and a bank client.
func New(cfg Config, ks KeyService, auth Authorizer, bc BankClient) *API {
	if cfg.MaxBody == 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.DenialQuota == 0 {
		cfg.DenialQuota = DefaultDenialQuota
	}
	if cfg.MaxInFlightPerClient == 0 {
		cfg.MaxInFlightPerClient = DefaultMaxInFlightPerClient
	}
	if cfg.MaxBankCalls == 0 {
		cfg.MaxBankCalls = DefaultMaxBankCalls
	}
	return &API{cfg: cfg, keys: ks, auth: auth, bank: bc, log: cfg.Log, quota: newDenialQuota(cfg.DenialQuota),
		inFlight: inFlight{max: cfg.MaxInFlightPerClient, n: map[string]int{}}, bankCalls: make(chan struct{}, cfg.MaxBankCalls)}
}

type route map[string]http.HandlerFunc // method → handler

// Handler is the mutual-TLS API: every request but GET /health needs a
// verified client certificate.
func (a *API) Handler() http.Handler {
	routes := map[string]route{
		"/":                {http.MethodGet: a.root},
		"/health":          {http.MethodGet: a.health},
		"/sign":            {http.MethodPost: a.sign},
		"/makeRequest":     {http.MethodPost: a.makeRequest},
		"/jws":             {http.MethodPost: a.signJWS},
		"/jws/verify":      {http.MethodPost: a.verifyJWS},
		"/clientAssertion": {http.MethodPost: a.clientAssertion},
		"/httpsig":         {http.MethodPost: a.signHTTP},
		"/keys":            {http.MethodGet: a.listKeys},
		"/openapi.json":    {http.MethodGet: a.openapi},
	}
	return a.logged(a.requireClient(router(routes, a.cfg.ServerName)))
}

// HealthHandler is the plain-HTTP listener: GET /health only.
func (a *API) HealthHandler() http.Handler {
	return a.logged(router(map[string]route{"/health": {http.MethodGet: a.health}}, a.cfg.ServerName))
}

// router dispatches on path then method, answering unknown paths and
// methods the way the reference does, including its redirect of a path
// with a trailing slash to the route without it.
func router(routes map[string]route, serverName func() string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rt, ok := routes[r.URL.Path]
		if !ok {
			if trimmed := strings.TrimSuffix(r.URL.Path, "/"); trimmed != r.URL.Path && trimmed != "" {
				if _, ok := routes[trimmed]; ok {
					http.Redirect(w, r, redirectTo(r, trimmed, serverName), http.StatusTemporaryRedirect)
					return
				}
			}
			writeRaw(w, http.StatusNotFound, []byte(`{"detail":"Not Found"}`))
			return
		}
		method := r.Method
		if method == http.MethodHead {
			method = http.MethodGet
		}
		h, ok := rt[method]
		if !ok {
			allowed := make([]string, 0, len(rt))
			for m := range rt {
				allowed = append(allowed, m)
			}
			slices.Sort(allowed)
			w.Header().Set("Allow", strings.Join(allowed, ", "))
			writeRaw(w, http.StatusMethodNotAllowed, []byte(`{"detail":"Method Not Allowed"}`))
			return
		}
		h(w, r)
	})
}

// redirectTo is the Location of a redirect to path: absolute with the
// configured server name and the port the request came in on, or relative
// without a name; never built from the client's Host header.
func redirectTo(r *http.Request, path string, serverName func() string) string {
	u := url.URL{Path: path, RawQuery: r.URL.RawQuery}
	if serverName == nil || serverName() == "" {
		return u.String()
	}
	u.Scheme, u.Host = "https", serverName()
	if r.TLS == nil {
		u.Scheme = "http"
	}
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if _, port, err := net.SplitHostPort(la.String()); err == nil {
			u.Host = net.JoinHostPort(u.Host, port)
		}
	}
	return u.String()
}

type ctxKey int

const (
	keyClient ctxKey = iota
	keyLog
)

// requestLog collects what one request's log line says: never request
// data or signatures, only their digests and sizes.
type requestLog struct {
	id    string
	start time.Time
	mu    sync.Mutex
	attrs []any
	// quiet: the request was a refusal beyond its client's quota; its
	// line goes to the debug level.
	quiet bool
	// What metrics label the answer with.
	op, key, client string
}

// label sets what metrics say of the request: its operation and key.
func (l *requestLog) label(op, key string) {
	l.mu.Lock()
	l.op, l.key = op, key
	l.mu.Unlock()
}

// add appends attributes; a string value is bounded as audit records
// bound their fields (a client chooses key ids and paths).
func (l *requestLog) add(attrs ...any) {
	for i, v := range attrs {
		if s, ok := v.(string); ok {
			attrs[i] = audit.Truncate(s, audit.MaxField)
		}
	}
	l.mu.Lock()
	l.attrs = append(l.attrs, attrs...)
	l.mu.Unlock()
}

func logOf(r *http.Request) *requestLog {
	l, _ := r.Context().Value(keyLog).(*requestLog)
	if l == nil {
		return &requestLog{}
	}
	return l
}

// statusWriter remembers the status sent.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// logged gives each request an id (echoed in X-Request-Id) and one log
// line.
func (a *API) logged(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		var b [8]byte
		rand.Read(b[:])
		id := hex.EncodeToString(b[:])
		w.Header().Set("X-Request-Id", id)
		rl := &requestLog{id: id, start: start}
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), keyLog, rl)))
		attrs := []any{"request_id", id, "method", r.Method, "path", r.URL.Path, "status", sw.status,
			"duration_ms", float64(time.Since(start).Microseconds()) / 1000, "remote", r.RemoteAddr}
		rl.mu.Lock()
		attrs = append(attrs, rl.attrs...)
		level := slog.LevelInfo
		if rl.quiet {
			level = slog.LevelDebug
		}
		op, key, client := rl.op, rl.key, rl.client
		rl.mu.Unlock()
		a.log.Log(r.Context(), level, "request", attrs...)
		if a.cfg.Observe != nil {
			if op == "" {
				op = opOf(r.URL.Path)
			}
			a.cfg.Observe(op, key, client, sw.status, time.Since(start))
		}
	})
}

// requireClient refuses every request without a verified client
// certificate, except GET /health, and puts the client's identity in the
// request context.
func (a *API) requireClient(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chain := listener.VerifiedChain(r)
		if chain == nil {
			if r.URL.Path == "/health" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
				next.ServeHTTP(w, r)
				return
			}
			writeError(w, apiError{status: http.StatusForbidden, message: "Client certificate required",
				data: "this endpoint needs a client certificate issued by a CA the broker trusts"})
			return
		}
		id := a.ids.of(a.cfg.Identity, chain)
		rl := logOf(r)
		rl.add("client", id.Subject, "client_sha256", id.Fingerprint)
		rl.mu.Lock()
		rl.client = audit.Truncate(id.CN, 64)
		rl.mu.Unlock()
		r = r.WithContext(context.WithValue(r.Context(), keyClient, id))
		if !a.inFlight.acquire(id.Fingerprint) {
			// Before the body is read: the cheapest refusal there is. The
			// connection stays: a new one would cost a handshake.
			a.reply(w, r, audit.Record{Op: opOf(r.URL.Path)}, failure(tooMany(a.cfg.MaxInFlightPerClient)))
			return
		}
		defer a.inFlight.release(id.Fingerprint)
		if signers[r.URL.Path] && a.cfg.TPMBusy != nil && a.cfg.TPMBusy() {
			a.reply(w, r, audit.Record{Op: opOf(r.URL.Path)}, failure(tpmBusy))
			return
		}
		if a.cfg.CheckClient != nil {
			if err := a.cfg.CheckClient(chain); err != nil {
				// Revoked since the handshake: refuse, on record, and
				// close the connection after this answer.
				logOf(r).add("refused", err.Error())
				w.Header().Set("Connection", "close")
				a.reply(w, r, audit.Record{Op: "revoked"}, failure(apiError{status: http.StatusForbidden,
					message: "Client certificate revoked", data: err.Error()}))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// answer is what a handler sends back.
type answer struct {
	status     int
	body       []byte
	retryAfter string
	errText    string // for the audit record
}

func success(body []byte) answer { return answer{status: http.StatusOK, body: body} }

func failure(e apiError) answer {
	return answer{status: e.status, body: e.body(), retryAfter: e.retryAfter, errText: e.text()}
}

// auditUnavailable answers an operation whose record cannot be written.
var auditUnavailable = apiError{status: http.StatusServiceUnavailable, message: "Audit log unavailable",
	data: "no result is returned: the audit record of this operation cannot be written", retryAfter: "5"}

// record completes rec with who asked and when, and makes it durable.
func (a *API) record(r *http.Request, rec audit.Record) error {
	if a.cfg.Audit == nil {
		return nil
	}
	rl, id := logOf(r), clientOf(r)
	rec.RequestID, rec.Client, rec.ClientSHA256 = rl.id, id.Subject, id.Fingerprint
	rec.DurationMS = float64(time.Since(rl.start).Microseconds()) / 1000
	if refusal(rec.Status) {
		admitted, summaries := a.quota.admit(id.Fingerprint, id.Subject)
		for _, s := range summaries {
			if _, err := a.cfg.Audit.Append(r.Context(), s); err != nil {
				return err
			}
		}
		if !admitted {
			rl.mu.Lock()
			rl.quiet = true
			rl.mu.Unlock()
			return nil
		}
	}
	seq, err := a.cfg.Audit.Append(r.Context(), rec)
	if err != nil {
		rl.add("audit_error", err.Error())
		return err
	}
	rl.add("audit_seq", seq)
	return nil
}

// refusal reports whether a status answers a request that did nothing: a
// client's mistake or a denial (4xx), or an operation refused for load
// (503). Operations that ran, and their failures, are always recorded.
func refusal(status int) bool {
	return (status >= 400 && status < 500) || status == http.StatusServiceUnavailable
}

// reply records the operation's outcome, then sends the answer: the
// result leaves only once its record is on disk.
func (a *API) reply(w http.ResponseWriter, r *http.Request, rec audit.Record, ans answer) {
	rec.Status, rec.Error = ans.status, ans.errText
	if err := a.record(r, rec); err != nil {
		writeError(w, auditUnavailable)
		return
	}
	if ans.retryAfter != "" {
		w.Header().Set("Retry-After", ans.retryAfter)
	}
	writeRaw(w, ans.status, ans.body)
}

func clientOf(r *http.Request) policy.Identity {
	id, _ := r.Context().Value(keyClient).(policy.Identity)
	return id
}

func (a *API) root(w http.ResponseWriter, _ *http.Request) {
	writeRaw(w, http.StatusOK, []byte(`{"result":"eIDAS broker"}`))
}

// health is GET /health: {"result":"ok"}, byte for byte as the reference
// answers; with ?details and a client certificate, also the warnings an
// operator should act on.
func (a *API) health(w http.ResponseWriter, r *http.Request) {
	if a.cfg.Health != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		if err := a.cfg.Health(ctx); err != nil {
			logOf(r).add("health", err.Error())
			writeError(w, apiError{status: http.StatusServiceUnavailable, message: "Service unavailable",
				data: healthReason(err), retryAfter: "5"})
			return
		}
	}
	if !r.URL.Query().Has("details") || listener.VerifiedChain(r) == nil {
		writeRaw(w, http.StatusOK, []byte(`{"result":"ok"}`))
		return
	}
	warnings := []string{}
	if a.cfg.Warnings != nil {
		warnings = append(warnings, a.cfg.Warnings()...)
	}
	type details struct {
		Warnings []string `json:"warnings"`
	}
	writeJSON(w, http.StatusOK, struct {
		Result  string  `json:"result"`
		Details details `json:"details"`
	}{"ok", details{warnings}})
}

// HealthError is a health check failure whose Reason may be shown to
// anyone (it names the failing part, no internals).
type HealthError struct {
	Reason string
	Err    error
}

func (e *HealthError) Error() string { return e.Reason + ": " + e.Err.Error() }
func (e *HealthError) Unwrap() error { return e.Err }

func healthReason(err error) string {
	var he *HealthError
	if errors.As(err, &he) {
		return he.Reason
	}
	return "not ready"
}
