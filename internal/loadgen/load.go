package loadgen

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Client is one identity a Load comes from.
type Client struct {
	// TLS is its configuration: client certificate, roots, server name.
	// Without a session cache, the client's workers share one, so that a
	// connection the server closed comes back resumed.
	TLS *tls.Config
	// Source is the local IP address its connections come from; empty:
	// the system's choice.
	Source string
}

// LoadOptions shapes and bounds a Load.
type LoadOptions struct {
	// URL is where every request goes (https://127.0.0.1:8443/sign).
	URL string
	// Method defaults to POST when Body is set, else GET.
	Method string
	// Body is every request's body.
	Body []byte
	// Header is added to every request; Content-Type defaults to
	// application/json when Body is set.
	Header http.Header
	// Workers is the number of concurrent workers. Worker i is
	// clients[i % len(clients)] on a connection of its own, kept alive:
	// it sends its next request as soon as it has the last answer,
	// whatever the answer (a 503's Retry-After is ignored), and dials
	// again only when the connection failed.
	Workers int
	// Requests bounds the requests of all workers together, Duration
	// the time; at least one must be set. The load also ends with ctx.
	Requests int
	Duration time.Duration
	// Warmup, with Duration, is a time before Duration when the workers
	// already send requests, on the connections they go on using, but
	// nothing is measured: an answer counts when it comes after the
	// warm-up, and its latency when its request was also sent after it.
	// Transport errors count whenever they come.
	Warmup time.Duration
	// Timeout bounds one request; default 30 s.
	Timeout time.Duration
	// Success tells a success by its status and body (read up to 1 MiB);
	// default: status 200.
	Success func(status int, body []byte) bool
}

// LoadResult is what a Load measured.
type LoadResult struct {
	// Elapsed is the load's duration after its warm-up, until its last
	// worker stopped.
	Elapsed time.Duration
	// Requests counts the requests that ended with an answer or a
	// transport error before the load ended; those it cut are not
	// counted at all.
	Requests int64
	// Successes counts the answers Success accepted, Unavailable the
	// 503 answers (RetryAfter those of them with a Retry-After header),
	// Failed the other answers; Statuses counts every answer by status.
	Successes, Unavailable, RetryAfter, Failed int64
	Statuses                                   map[int]int64
	// TransportErrors counts requests without an answer: dial or TLS
	// failures, connections reset, timeouts; FirstTransportError is the
	// first of them, for diagnosis.
	TransportErrors     int64
	FirstTransportError error
	// Dials counts the connections the workers opened (Workers when
	// every connection stayed alive).
	Dials int64
	// SuccessesPerSec and UnavailablePerSec are Successes and
	// Unavailable over Elapsed.
	SuccessesPerSec, UnavailablePerSec float64
	// P50 and P99 are percentiles (nearest rank) of the successes'
	// latency, from sending the request to the end of the answer's body.
	P50, P99 time.Duration
	// Longest is the latency of the slowest answer, whatever its status,
	// to a request sent after the warm-up.
	Longest time.Duration
}

// maxAnswer is how much of an answer's body is read.
const maxAnswer = 1 << 20

// Load sends requests as opts says from len(clients) identities until
// its count or its time is used up or ctx ends. An error means the load
// could not start; failures of requests are counted.
func Load(ctx context.Context, clients []Client, opts LoadOptions) (LoadResult, error) {
	opts, err := opts.withDefaults(len(clients))
	if err != nil {
		return LoadResult{}, err
	}
	l := &load{opts: opts, tickets: newTickets(opts.Requests), statuses: map[int]int64{}}
	transports, err := l.transports(clients)
	if err != nil {
		return LoadResult{}, err
	}
	defer func() {
		for _, tr := range transports {
			tr.CloseIdleConnections()
		}
	}()
	l.from = time.Now().Add(opts.Warmup)
	if opts.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, l.from.Add(opts.Duration))
		defer cancel()
	}

	var wg sync.WaitGroup
	latencies := make([][]time.Duration, opts.Workers)
	for i, tr := range transports {
		client := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		wg.Go(func() {
			for !ended(ctx) && l.tickets.take() {
				if d, ok := l.request(ctx, client); ok {
					latencies[i] = append(latencies[i], d)
				}
			}
		})
	}
	wg.Wait()
	r := LoadResult{Elapsed: time.Since(l.from), Requests: l.requests.Load(), Successes: l.successes.Load(),
		Unavailable: l.unavailable.Load(), RetryAfter: l.retryAfter.Load(), Failed: l.failed.Load(), Statuses: l.statuses,
		TransportErrors: l.transport.Load(), FirstTransportError: l.firstTransport, Dials: l.dials.Load(),
		Longest: time.Duration(l.longest.Load())}
	if s := r.Elapsed.Seconds(); s > 0 {
		r.SuccessesPerSec, r.UnavailablePerSec = float64(r.Successes)/s, float64(r.Unavailable)/s
	}
	all := slices.Concat(latencies...)
	slices.Sort(all)
	r.P50, r.P99 = Percentile(all, 0.50), Percentile(all, 0.99)
	return r, nil
}

// withDefaults checks the options and fills in their defaults.
func (opts LoadOptions) withDefaults(clients int) (LoadOptions, error) {
	switch {
	case clients == 0:
		return opts, errors.New("loadgen: load: no clients")
	case opts.Workers <= 0:
		return opts, errors.New("loadgen: load: no workers")
	case opts.Requests <= 0 && opts.Duration <= 0:
		return opts, errors.New("loadgen: load: unbounded (set Requests or Duration)")
	case opts.Warmup < 0 || (opts.Warmup > 0 && opts.Duration <= 0):
		return opts, errors.New("loadgen: load: a warm-up needs a Duration after it")
	}
	if opts.Method == "" {
		opts.Method = http.MethodGet
		if opts.Body != nil {
			opts.Method = http.MethodPost
		}
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.Success == nil {
		opts.Success = func(status int, _ []byte) bool { return status == http.StatusOK }
	}
	if _, err := http.NewRequest(opts.Method, opts.URL, nil); err != nil {
		return opts, fmt.Errorf("loadgen: load: %w", err)
	}
	return opts, nil
}

// transports makes one HTTP transport per worker: worker i is client
// i % len(clients), and the workers of a client share its session cache.
func (l *load) transports(clients []Client) ([]*http.Transport, error) {
	tlsOf := make([]*tls.Config, len(clients))
	for i, c := range clients {
		cfg := &tls.Config{}
		if c.TLS != nil {
			cfg = c.TLS.Clone()
		}
		if cfg.ClientSessionCache == nil {
			cfg.ClientSessionCache = tls.NewLRUClientSessionCache(l.opts.Workers)
		}
		tlsOf[i] = cfg
	}
	transports := make([]*http.Transport, l.opts.Workers)
	for i := range transports {
		c := clients[i%len(clients)]
		d, err := dialer(c.Source, l.opts.Timeout)
		if err != nil {
			return nil, fmt.Errorf("loadgen: load: client %d: %w", i%len(clients), err)
		}
		transports[i] = &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				l.dials.Add(1)
				return d.DialContext(ctx, network, addr)
			},
			TLSClientConfig:     tlsOf[i%len(clients)],
			MaxIdleConnsPerHost: 1,
			ForceAttemptHTTP2:   false,
			DisableCompression:  true,
		}
	}
	return transports, nil
}

type load struct {
	opts    LoadOptions
	tickets *tickets
	from    time.Time // the end of the warm-up

	requests, successes, unavailable, retryAfter, failed, transport, dials atomic.Int64
	longest                                                                atomic.Int64 // nanoseconds
	mu                                                                     sync.Mutex
	statuses                                                               map[int]int64
	firstTransport                                                         error
}

// transportError counts a request without an answer.
func (l *load) transportError(err error) {
	l.requests.Add(1)
	l.transport.Add(1)
	l.mu.Lock()
	if l.firstTransport == nil {
		l.firstTransport = err
	}
	l.mu.Unlock()
}

// request sends one request and files its outcome; it returns the
// latency of a success.
func (l *load) request(ctx context.Context, client *http.Client) (time.Duration, bool) {
	rctx, cancel := context.WithTimeout(ctx, l.opts.Timeout)
	defer cancel()
	var body io.Reader
	if l.opts.Body != nil {
		body = bytes.NewReader(l.opts.Body)
	}
	req, err := http.NewRequestWithContext(rctx, l.opts.Method, l.opts.URL, body)
	if err != nil { // Load checked method and URL
		l.transportError(err)
		return 0, false
	}
	if l.opts.Header != nil {
		req.Header = l.opts.Header.Clone()
	}
	if l.opts.Body != nil && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	start := time.Now()
	resp, err := client.Do(req)
	var answer []byte
	if err == nil {
		answer, err = io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
		resp.Body.Close()
	}
	took := time.Since(start)
	if ended(ctx) { // the load ended first
		return 0, false
	}
	if err != nil {
		l.transportError(err)
		return 0, false
	}
	if time.Now().Before(l.from) { // warming up
		return 0, false
	}
	l.requests.Add(1)
	l.mu.Lock()
	l.statuses[resp.StatusCode]++
	l.mu.Unlock()
	for old := l.longest.Load(); !start.Before(l.from) && int64(took) > old && !l.longest.CompareAndSwap(old, int64(took)); old = l.longest.Load() {
	}
	switch {
	case l.opts.Success(resp.StatusCode, answer):
		l.successes.Add(1)
		return took, !start.Before(l.from)
	case resp.StatusCode == http.StatusServiceUnavailable:
		l.unavailable.Add(1)
		if resp.Header.Get("Retry-After") != "" {
			l.retryAfter.Add(1)
		}
	default:
		l.failed.Add(1)
	}
	return 0, false
}

// Percentile is the nearest-rank p-quantile (0 < p ≤ 1) of sorted, or 0
// when sorted is empty.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
