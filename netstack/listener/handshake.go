package listener

// Full handshakes are charged to a token bucket per source address. Each
// one costs a signature with the server key (a TPM command) before the
// peer proves anything.
//
// The charge is taken in the server certificate's signer, wrapped per
// connection, and not earlier in GetConfigForClient: a ClientHello says
// only which extensions it carries, so "it offers a session ticket" is a
// claim anyone can make with a ticket the server cannot open, and the
// handshake then falls back to a full one that signs. The signer is
// called exactly when the server signs (TLS 1.3 CertificateVerify, TLS
// 1.2 ServerKeyExchange) and never on a resumed handshake, so the charge
// falls on exactly the handshakes that cost the TPM, and the refusal is
// the signature itself refused; the handshake then fails with an alert
// (internal_error in TLS 1.3, handshake_failure in TLS 1.2).
//
// What the server spent by then is CPU only: reading the ClientHello,
// the key exchange, a failed ticket decryption; about 0.2 ms a refused
// handshake on the development machine. Their rate from one address is
// bounded only by MaxConnsPerIP connections at a time: limiting it too
// would mean a rate on new connections, which clients that do not keep
// their connections alive would hit.
//
// The buckets live in a table bounded by Config.MaxTrackedIPs: least
// recently used first out, and buckets that have refilled (no different
// from a new one) are swept as new addresses come.

import (
	"container/list"
	"crypto"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// ErrHandshakeRate is the error of a full handshake refused because its
// source address has used up its handshake allowance; the peer sees an
// alert.
var ErrHandshakeRate = errors.New("listener: too many full handshakes from this address")

// HandshakeStats counts full TLS handshakes on the API listeners, those
// that sign with the server key, since the server started. Resumed
// handshakes sign nothing and are not counted.
type HandshakeStats struct {
	// Charged counts full handshakes allowed to sign.
	Charged uint64
	// RefusedRate counts full handshakes refused before signing because
	// their source address's bucket was empty.
	RefusedRate uint64
	// Tracked is the number of source addresses with a bucket now.
	Tracked int
	// Evicted counts buckets dropped, before they had refilled, to make
	// room for another address (MaxTrackedIPs reached).
	Evicted uint64
}

// handshakeBuckets holds a token bucket per source address, for the full
// handshakes of the API listeners, in a table of bounded size.
type handshakeBuckets struct {
	rate  float64 // tokens per second; < 0: no limit
	burst float64
	max   int
	now   func() time.Time
	hook  admissionHook

	mu  sync.Mutex
	m   map[netip.Prefix]*list.Element
	lru list.List // of *bucket, most recently used first

	charged, refused, evicted atomic.Uint64
}

// bucket is one address's: tokens for full handshakes (or requests), and
// strikes, a second bucket of the same rate and burst that each refusal
// drains: an address with no strike left has its new connections refused
// at accept, held and then reset (see closed and admission.go).
type bucket struct {
	key             netip.Prefix
	tokens, strikes float64
	at              time.Time
}

func newHandshakeBuckets(cfg Config) *handshakeBuckets {
	return newBuckets(cfg.HandshakesPerIP, cfg.HandshakeBurstPerIP, cfg.MaxTrackedIPs, cfg.Clock)
}

// newBuckets makes a table of token buckets, rate tokens a second (< 0:
// no limit) up to burst, for at most max addresses.
func newBuckets(rate float64, burst, max int, now func() time.Time) *handshakeBuckets {
	b := &handshakeBuckets{rate: rate, burst: float64(burst), max: max, now: now, m: map[netip.Prefix]*list.Element{}}
	b.lru.Init()
	return b
}

// level is what the bucket holds at now.
func (b *handshakeBuckets) level(k *bucket, now time.Time) float64 {
	return b.fill(k.tokens, k, now)
}

// fill is v, a level of k at k.at, refilled up to now.
func (b *handshakeBuckets) fill(v float64, k *bucket, now time.Time) float64 {
	if d := now.Sub(k.at); d > 0 {
		return min(b.burst, v+d.Seconds()*b.rate)
	}
	return v
}

// closed reports whether key has used up its strikes: its full handshakes
// were refused a burst's worth of times, faster than the rate. Its new
// connections are then refused at accept (held, then reset), before the
// key exchange a refused handshake costs, until a strike comes back
// (1/rate). An address whose handshakes are resumed, or within its rate,
// is never closed.
func (b *handshakeBuckets) closed(key netip.Prefix) bool {
	if b.rate < 0 {
		return false
	}
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.m[key]
	return e != nil && b.fill(e.Value.(*bucket).strikes, e.Value.(*bucket), now) < 1
}

// take charges one full handshake to key, or refuses it.
func (b *handshakeBuckets) take(key netip.Prefix) bool {
	if b.rate < 0 {
		b.charged.Add(1)
		b.notify(evCharged, key)
		return true
	}
	b.mu.Lock()
	k := b.bucketOf(key, b.now())
	ok := k.tokens >= 1
	if ok {
		k.tokens--
	} else {
		k.strikes = max(k.strikes-1, 0)
	}
	b.mu.Unlock()
	if !ok {
		b.refused.Add(1)
		b.notify(evRefusedRate, key)
		return false
	}
	b.charged.Add(1)
	b.notify(evCharged, key)
	return true
}

// reserve takes a token from key's bucket and returns how long its holder
// waits for it: 0 while the bucket holds one, else until its turn (the
// bucket goes into debt) if that is within max, else max without a token.
func (b *handshakeBuckets) reserve(key netip.Prefix, max time.Duration) time.Duration {
	if b.rate < 0 {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	k := b.bucketOf(key, b.now())
	if k.tokens >= 1 {
		k.tokens--
		return 0
	}
	wait := time.Duration((1 - k.tokens) / b.rate * float64(time.Second))
	if wait > max {
		b.refused.Add(1)
		return max
	}
	k.tokens--
	b.charged.Add(1)
	return wait
}

// bucketOf returns key's bucket, filled up to now, made if need be. Under
// mu.
func (b *handshakeBuckets) bucketOf(key netip.Prefix, now time.Time) *bucket {
	// Sweep: an address whose bucket has refilled is no different from
	// one never seen. Two per call: the table shrinks back to the
	// addresses still being limited.
	for range 2 {
		e := b.lru.Back()
		if e == nil {
			break
		}
		if k := e.Value.(*bucket); k.key == key || b.level(k, now) < b.burst || b.fill(k.strikes, k, now) < b.burst {
			break
		}
		b.drop(e)
	}
	if e := b.m[key]; e != nil {
		k := e.Value.(*bucket)
		k.tokens, k.strikes, k.at = b.level(k, now), b.fill(k.strikes, k, now), now
		b.lru.MoveToFront(e)
		return k
	}
	for len(b.m) >= b.max {
		b.drop(b.lru.Back())
		b.evicted.Add(1)
	}
	k := &bucket{key: key, tokens: b.burst, strikes: b.burst, at: now}
	b.m[key] = b.lru.PushFront(k)
	return k
}

func (b *handshakeBuckets) drop(e *list.Element) {
	delete(b.m, e.Value.(*bucket).key)
	b.lru.Remove(e)
}

func (b *handshakeBuckets) notify(ev admissionEvent, key netip.Prefix) {
	if b.hook != nil {
		b.hook(listenerAPI, ev, key)
	}
}

func (b *handshakeBuckets) stats() HandshakeStats {
	b.mu.Lock()
	n := len(b.m)
	b.mu.Unlock()
	return HandshakeStats{Charged: b.charged.Load(), RefusedRate: b.refused.Load(), Tracked: n, Evicted: b.evicted.Load()}
}

// chargedSigner is the server key as one connection's handshake sees it:
// signing takes a token from the connection's address first. It hides
// every other interface of the key (crypto.Decrypter: RSA key exchange
// would decrypt with the key without any charge).
type chargedSigner struct {
	key     crypto.Signer
	buckets *handshakeBuckets
	addr    netip.Prefix
}

// Public is the server key's public key.
func (s *chargedSigner) Public() crypto.PublicKey { return s.key.Public() }

// Sign signs digest with the server key if the address may have one more
// full handshake.
func (s *chargedSigner) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if !s.buckets.take(s.addr) {
		return nil, fmt.Errorf("%w (%s)", ErrHandshakeRate, s.addr)
	}
	return s.key.Sign(rand, digest, opts)
}

// SignMessage signs msg (crypto/tls signs through it) if the address may
// have one more full handshake.
func (s *chargedSigner) SignMessage(rand io.Reader, msg []byte, opts crypto.SignerOpts) ([]byte, error) {
	if !s.buckets.take(s.addr) {
		return nil, fmt.Errorf("%w (%s)", ErrHandshakeRate, s.addr)
	}
	return crypto.SignMessage(s.key, rand, msg, opts)
}
