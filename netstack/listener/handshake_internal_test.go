package listener

import (
	"net/netip"
	"sync"
	"testing"
	"time"
)

// fakeClock is a clock that moves only when told.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newBuckets(rate float64, burst, max int, clock *fakeClock) *handshakeBuckets {
	return newHandshakeBuckets(Config{HandshakesPerIP: rate, HandshakeBurstPerIP: burst, MaxTrackedIPs: max, Clock: clock.Now})
}

func key(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
}

// TestBucketRefill: a burst, then the rate; a bucket never holds more than
// its burst; addresses do not share.
func TestBucketRefill(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{now: time.Unix(1e9, 0)}
	b := newBuckets(2, 3, 16, clock)
	take := func(k netip.Prefix, want ...bool) {
		t.Helper()
		for i, w := range want {
			if got := b.take(k); got != w {
				t.Fatalf("take %d from %s at %s: %v, want %v", i, k, clock.Now().Format(time.StampMilli), got, w)
			}
		}
	}
	take(key(1), true, true, true, false)
	take(key(2), true)
	clock.Advance(499 * time.Millisecond)
	take(key(1), false)
	clock.Advance(time.Millisecond)
	take(key(1), true, false)
	clock.Advance(time.Hour)
	take(key(1), true, true, true, false)
	if st := b.stats(); st.Charged != 8 || st.RefusedRate != 4 {
		t.Fatalf("stats %+v", st)
	}
	unlimited := newBuckets(-1, 1, 16, clock)
	for range 100 {
		if !unlimited.take(key(1)) {
			t.Fatal("a negative rate limits")
		}
	}
	if st := unlimited.stats(); st.Charged != 100 || st.Tracked != 0 {
		t.Fatalf("unlimited: %+v", st)
	}
}

// TestBucketTableBounded: churn of addresses never grows the table
// beyond its bound, and the address seen most recently keeps its (empty)
// bucket; buckets that refilled are swept as new addresses come.
func TestBucketTableBounded(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{now: time.Unix(1e9, 0)}
	b := newBuckets(1, 2, 8, clock)
	hot := key(0)
	b.take(hot)
	b.take(hot)
	for i := 1; i <= 10000; i++ {
		b.take(key(i))
		if i%5 == 0 && b.take(hot) {
			t.Fatalf("the hot address got a handshake after %d others", i)
		}
		if n := len(b.m); n > 8 || n != b.lru.Len() {
			t.Fatalf("%d addresses tracked (list %d), bound 8", n, b.lru.Len())
		}
	}
	if st := b.stats(); st.Tracked != 8 || st.Evicted != 10001-8 {
		t.Fatalf("stats %+v", st)
	}

	// Two seconds later every bucket is full again: each new address
	// sweeps two of them.
	clock.Advance(2 * time.Second)
	for i := 1; i <= 4; i++ {
		b.take(key(20000 + i))
	}
	if st := b.stats(); st.Tracked != 4 || st.Evicted != 10001-8 {
		t.Fatalf("after the sweep: %+v", st)
	}
}
