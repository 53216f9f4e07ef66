package listener

// Pacing bounds how fast one connection can make the server answer
// requests that do no work. Admission control at accept and on full
// handshakes bounds connections and signatures, but a kept-alive
// connection can ask again the moment it has an answer: a cached /health,
// or a 429 or 503 refusal, costs little each, yet at tens of thousands a
// second from a peer that ignores Retry-After they take the cores from the
// operations that do work (the TPM then idles between them).
//
// So the server answers at once and then holds the connection, reading
// nothing more from it, for a while:
//
//   - after a request without a verified client certificate (any request
//     on the health listener, /health and refusals on the API listener),
//     or for /health, beyond Config.RequestsPerIP a second from its source
//     address (bursts of Config.RequestBurstPerIP): until the address's
//     turn comes, at most Config.MaxPause;
//   - after an answer with Retry-After (in seconds) to a certified client,
//     a 429 or a 503 refusal: for the Retry-After, at most Config.MaxPause;
//     the server holds the client to what it said.
//
// A held connection still counts against the connection caps, so one
// address's answers are bounded by its rate plus MaxConnsPerIP per
// MaxPause. The listeners speak HTTP/1.x only (the API offers no "h2" in
// ALPN, the health listener no h2c), one request at a time per
// connection.

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"
)

// PaceStats counts the connections held after an answer.
type PaceStats struct {
	// Anonymous counts requests without a client certificate, or for
	// /health, beyond their source address's rate.
	Anonymous uint64
	// Refusals counts answers with Retry-After (429, 503) to certified
	// clients.
	Refusals uint64
}

// pacer holds connections after the answers it paces.
type pacer struct {
	buckets  *handshakeBuckets // requests without a client certificate, per source address
	v6bits   int
	maxPause time.Duration // < 0: no pacing
	// sleep waits d or until ctx ends; tests replace it.
	sleep func(ctx context.Context, d time.Duration)

	anonymous, refusals atomic.Uint64
}

func newPacer(cfg Config) *pacer {
	return &pacer{buckets: newBuckets(cfg.RequestsPerIP, cfg.RequestBurstPerIP, cfg.MaxTrackedIPs, cfg.Clock),
		v6bits: cfg.IPv6PrefixLen, maxPause: cfg.MaxPause, sleep: sleepCtx}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// wrap returns next with its connections paced.
func (p *pacer) wrap(next http.Handler) http.Handler {
	if p.maxPause < 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var wait time.Duration
		// /health is metered for everyone: its 503 carries a Retry-After
		// that a monitor need not wait out.
		metered := VerifiedChain(r) == nil || r.URL.Path == "/health"
		if metered {
			wait = p.buckets.reserve(remoteKey(r.RemoteAddr, p.v6bits), p.maxPause)
		}
		next.ServeHTTP(w, r)
		switch {
		case metered && wait > 0:
			p.anonymous.Add(1)
		case !metered && w.Header().Get("Retry-After") != "":
			secs, err := strconv.Atoi(w.Header().Get("Retry-After"))
			if err != nil || secs <= 0 {
				return
			}
			wait = min(time.Duration(secs)*time.Second, p.maxPause)
			p.refusals.Add(1)
		default:
			return
		}
		// The answer leaves now; the next request waits in the socket.
		http.NewResponseController(w).Flush()
		p.sleep(r.Context(), wait)
	})
}

func (p *pacer) stats() PaceStats {
	return PaceStats{Anonymous: p.anonymous.Load(), Refusals: p.refusals.Load()}
}

// remoteKey is addrKey of a request's RemoteAddr.
func remoteKey(remote string, v6bits int) netip.Prefix {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return netip.Prefix{}
	}
	return addrKey(net.TCPAddrFromAddrPort(ap), v6bits)
}
