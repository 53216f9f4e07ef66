package listener

import (
	"fmt"
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

func key(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
}

// TestBucketRefill: a burst, then the rate; a bucket never holds more than
// its burst; addresses do not share.
func TestBucketRefill(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{now: time.Unix(1e9, 0)}
	b := newBuckets(2, 3, 16, clock.Now)
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
	unlimited := newBuckets(-1, 1, 16, clock.Now)
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
	b := newBuckets(1, 2, 8, clock.Now)
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

// TestStrikesCloseAnAddress: an address is closed at accept once a
// burst's worth of its full handshakes were refused, and open again when a
// strike comes back at the rate; handshakes within the rate, and other
// addresses, never close it.
func TestStrikesCloseAnAddress(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{now: time.Unix(1e9, 0)}
	b := newBuckets(2, 3, 16, clock.Now)
	hot, other := key(1), key(2)
	for range 3 {
		b.take(hot) // the burst, charged
	}
	if b.closed(hot) || b.closed(other) {
		t.Fatal("closed before any refusal")
	}
	for i := range 3 {
		if b.closed(hot) {
			t.Fatalf("closed after %d refusals, want 3", i)
		}
		if b.take(hot) {
			t.Fatal("a handshake beyond the bucket passed")
		}
	}
	if !b.closed(hot) || b.closed(other) {
		t.Fatalf("after 3 refusals: hot closed %v, other closed %v; want true, false", b.closed(hot), b.closed(other))
	}
	clock.Advance(499 * time.Millisecond)
	if !b.closed(hot) {
		t.Fatal("open again before a strike came back")
	}
	clock.Advance(time.Millisecond)
	if b.closed(hot) {
		t.Fatal("still closed with a strike back")
	}
	if unlimited := newBuckets(-1, 1, 16, clock.Now); unlimited.take(hot) && unlimited.closed(hot) {
		t.Fatal("a negative rate closes")
	}
}

// TestReserve: requests within the burst wait for nothing; beyond it each
// waits its turn at the rate, in debt, up to max; beyond max they wait max
// and take nothing.
func TestReserve(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{now: time.Unix(1e9, 0)}
	b := newBuckets(10, 2, 16, clock.Now)
	var got []time.Duration
	for range 14 {
		got = append(got, b.reserve(key(1), time.Second).Round(time.Millisecond))
	}
	want := "[0s 0s 100ms 200ms 300ms 400ms 500ms 600ms 700ms 800ms 900ms 1s 1s 1s]"
	if fmt.Sprint(got) != want {
		t.Fatalf("waits %v, want %s", got, want)
	}
	if w := b.reserve(key(2), time.Second); w != 0 {
		t.Fatalf("another address waits %v", w)
	}
	clock.Advance(2 * time.Second) // the debt paid back, the bucket full again
	if w := b.reserve(key(1), time.Second); w != 0 {
		t.Fatalf("after the debt is paid: wait %v", w)
	}
}
