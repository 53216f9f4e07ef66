package tpm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/brokerd/brokerd/internal/swtpmtest"
	"github.com/google/go-tpm/tpm2"
)

// These tests drive the queue with operations that hold the token until
// the test lets them go, and learn that an operation waits from Waiting:
// every ordering is decided by signals, never by sleeping.

// openQ opens a Device on a fresh swtpm.
func openQ(t *testing.T, cfg Config) *Device {
	t.Helper()
	sw := swtpmtest.Start(t)
	cfg.Address = sw.Address()
	d, err := Open(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// waitUntil yields until cond holds; it fails the test after 10 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		runtime.Gosched()
	}
}

// hold makes a goroutine the device's owner (on the uncontended path)
// until the returned function is called; that function waits for the
// operation to end. A test that fails first releases it at cleanup, before
// the device closes.
func hold(t *testing.T, d *Device) (release func()) {
	t.Helper()
	held, rel, done := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		done <- d.do(context.Background(), func() error { close(held); <-rel; return nil })
	}()
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("the holding operation did not start")
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			close(rel)
			if err := <-done; err != nil {
				t.Errorf("holding operation: %v", err)
			}
		})
	}
	t.Cleanup(release)
	return release
}

// tape records the order in which operations got the TPM.
type tape struct {
	mu  sync.Mutex
	log []string
}

func (tp *tape) add(s string) {
	tp.mu.Lock()
	tp.log = append(tp.log, s)
	tp.mu.Unlock()
}

func (tp *tape) len() int {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return len(tp.log)
}

func (tp *tape) String() string {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return strings.Join(tp.log, " ")
}

// enqueue starts an operation of class c that records id on tp, and
// returns once it waits in c's queue (the device must be held).
func enqueue(t *testing.T, d *Device, ctx context.Context, c Class, id string, tp *tape) <-chan error {
	t.Helper()
	before := d.Waiting()[c]
	done := make(chan error, 1)
	go func() {
		done <- d.do(WithClass(ctx, c), func() error { tp.add(id); return nil })
	}()
	waitUntil(t, fmt.Sprintf("%s waits in the %s queue", id, c), func() bool { return d.Waiting()[c] == before+1 })
	return done
}

func wantNil(t *testing.T, what string, errs ...<-chan error) {
	t.Helper()
	for i, ch := range errs {
		if err := <-ch; err != nil {
			t.Errorf("%s %d: %v", what, i, err)
		}
	}
}

// Waiters go by class, API before handshakes before housekeeping, and in
// arrival order within a class, whatever order they arrived in.
func TestQueueOrderByClass(t *testing.T) {
	t.Parallel()
	d := openQ(t, Config{})
	ctx := context.Background()
	var tp tape
	release := hold(t, d)
	var errs []<-chan error
	for _, w := range []struct {
		c  Class
		id string
	}{
		{ClassHousekeeping, "K1"}, {ClassHandshake, "H1"}, {ClassAPI, "A1"},
		{ClassHandshake, "H2"}, {ClassHousekeeping, "K2"}, {ClassAPI, "A2"},
	} {
		errs = append(errs, enqueue(t, d, ctx, w.c, w.id, &tp))
	}
	if got := d.Waiting(); got != [NumClasses]int{2, 2, 2} {
		t.Fatalf("Waiting() = %v, want 2 of each class", got)
	}
	release()
	wantNil(t, "queued operation", errs...)
	// Rounds of 8 API, 2 handshake, 1 housekeeping turn: K2 waits for the
	// next round, in which it is alone.
	if got, want := tp.String(), "A1 A2 H1 H2 K1 K2"; got != want {
		t.Fatalf("order %q, want %q", got, want)
	}
}

// With every class backlogged, each round gives API 8 turns, handshakes 2
// and housekeeping 1, in that order: API never waits more than 3 turns of
// the others, and housekeeping gets a turn in every round.
func TestQueueShares(t *testing.T) {
	t.Parallel()
	d := openQ(t, Config{})
	ctx := context.Background()
	var tp tape
	release := hold(t, d)
	var errs []<-chan error
	for i := range 20 {
		errs = append(errs, enqueue(t, d, ctx, ClassAPI, "A", &tp))
		if i < 5 {
			errs = append(errs, enqueue(t, d, ctx, ClassHandshake, "H", &tp))
		}
		if i < 3 {
			errs = append(errs, enqueue(t, d, ctx, ClassHousekeeping, "K", &tp))
		}
	}
	release()
	wantNil(t, "queued operation", errs...)
	want := strings.Repeat("A ", 8) + "H H K " + strings.Repeat("A ", 8) + "H H K " + strings.Repeat("A ", 4) + "H K"
	if got := tp.String(); got != want {
		t.Fatalf("order\n%s\nwant\n%s", got, want)
	}
}

// Configured weights replace the defaults.
func TestQueueConfiguredWeights(t *testing.T) {
	t.Parallel()
	cfg := Config{}
	cfg.Classes[ClassAPI].Weight = 1
	cfg.Classes[ClassHandshake].Weight = 3
	d := openQ(t, cfg)
	ctx := context.Background()
	var tp tape
	release := hold(t, d)
	var errs []<-chan error
	for range 4 {
		errs = append(errs, enqueue(t, d, ctx, ClassAPI, "A", &tp))
		errs = append(errs, enqueue(t, d, ctx, ClassHandshake, "H", &tp))
	}
	release()
	wantNil(t, "queued operation", errs...)
	if got, want := tp.String(), "A H H H A H A A"; got != want {
		t.Fatalf("order %q, want %q", got, want)
	}
}

// Each class has its own room: when handshakes and housekeeping fill
// theirs, the next of them fails at once with ErrBusy while API
// operations still queue, up to their own depth.
func TestQueueDepthPerClass(t *testing.T) {
	t.Parallel()
	d := openQ(t, Config{QueueDepth: 8, QueueWait: time.Minute}) // depths 8, 2, 1
	ctx := context.Background()
	var tp tape
	release := hold(t, d)
	var errs []<-chan error
	for c, depth := range [NumClasses]int{8, 2, 1} {
		c := Class(c)
		if got := d.cfg.Depth(c); got != depth {
			t.Fatalf("%s depth %d, want %d", c, got, depth)
		}
		for i := range depth {
			if d.Saturated(c) {
				t.Fatalf("%s saturated with %d of %d waiting", c, i, depth)
			}
			errs = append(errs, enqueue(t, d, ctx, c, c.String(), &tp))
		}
	}
	for c := range NumClasses {
		if !d.Saturated(c) {
			t.Errorf("%s not saturated at its depth", c)
		}
		err := d.do(WithClass(ctx, c), func() error { t.Errorf("%s operation beyond the depth ran", c); return nil })
		if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), c.String()) {
			t.Errorf("%s operation beyond the depth: %v, want ErrBusy naming the class", c, err)
		}
	}
	release()
	wantNil(t, "queued operation", errs...)
	for c := range NumClasses {
		if d.Saturated(c) {
			t.Errorf("%s still saturated with nothing waiting", c)
		}
	}
	if n := tp.len(); n != 11 {
		t.Fatalf("%d operations ran, want 11", n)
	}
}

// An explicit depth replaces the share of QueueDepth.
func TestQueueConfiguredDepth(t *testing.T) {
	t.Parallel()
	cfg := Config{QueueDepth: 8}
	cfg.Classes[ClassHandshake].Depth = 3
	d := openQ(t, cfg)
	ctx := context.Background()
	var tp tape
	release := hold(t, d)
	var errs []<-chan error
	for range 3 {
		errs = append(errs, enqueue(t, d, ctx, ClassHandshake, "H", &tp))
	}
	if err := d.do(WithClass(ctx, ClassHandshake), func() error { return nil }); !errors.Is(err, ErrBusy) {
		t.Errorf("fourth handshake: %v, want ErrBusy", err)
	}
	release()
	wantNil(t, "queued operation", errs...)
}

// An operation that waits longer than QueueWait fails with ErrBusy and
// leaves the queue, in every class; the token is not lost.
func TestQueueWaitPerClass(t *testing.T) {
	t.Parallel()
	d := openQ(t, Config{QueueWait: 50 * time.Millisecond})
	ctx := context.Background()
	release := hold(t, d)
	errs := make(chan error, NumClasses)
	for c := range NumClasses {
		go func() { errs <- d.do(WithClass(ctx, c), func() error { return errors.New("ran") }) }()
	}
	for range NumClasses {
		if err := <-errs; !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "waited") {
			t.Errorf("waiting operation: %v, want ErrBusy after the wait", err)
		}
	}
	if got := d.Waiting(); got != [NumClasses]int{} {
		t.Errorf("Waiting() = %v after the waiters gave up", got)
	}
	release()
	if err := d.Ping(ctx); err != nil {
		t.Fatalf("ping after the waits: %v", err)
	}
}

// A waiter whose context ends leaves the queue; the others keep their turn.
func TestQueueCancel(t *testing.T) {
	t.Parallel()
	d := openQ(t, Config{})
	var tp tape
	release := hold(t, d)
	ctx, cancel := context.WithCancel(context.Background())
	a := enqueue(t, d, ctx, ClassAPI, "A", &tp)
	b := enqueue(t, d, context.Background(), ClassHandshake, "B", &tp)
	cancel()
	if err := <-a; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter: %v", err)
	}
	if got := d.Waiting(); got != [NumClasses]int{0, 1, 0} {
		t.Fatalf("Waiting() = %v, want the handshake only", got)
	}
	release()
	wantNil(t, "handshake", b)
	if got := tp.String(); got != "B" {
		t.Fatalf("ran %q, want B", got)
	}
}

// Close fails every waiter with ErrClosed, waits for the operation in
// flight, and refuses later operations.
func TestQueueClose(t *testing.T) {
	t.Parallel()
	d := openQ(t, Config{})
	ctx := context.Background()
	var tp tape
	release := hold(t, d)
	var errs []<-chan error
	for c := range NumClasses {
		errs = append(errs, enqueue(t, d, ctx, c, c.String(), &tp))
	}
	closed := make(chan error, 1)
	go func() { closed <- d.Close() }()
	for _, ch := range errs {
		if err := <-ch; !errors.Is(err, ErrClosed) {
			t.Errorf("waiter at close: %v, want ErrClosed", err)
		}
	}
	select {
	case <-closed:
		t.Fatal("Close returned while an operation held the TPM")
	default:
	}
	release()
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := d.Ping(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("ping after close: %v", err)
	}
	if tp.len() != 0 {
		t.Fatalf("waiters ran after close: %s", tp.String())
	}
}

// Signers wait in their own class unless the context names one.
func TestSignerClasses(t *testing.T) {
	t.Parallel()
	d := openQ(t, Config{})
	ctx := context.Background()
	k, err := d.CreateKey(ctx, P256)
	if err != nil {
		t.Fatal(err)
	}
	s, err := d.Signer(k)
	if err != nil {
		t.Fatal(err)
	}
	hs := s.WithClass(ClassHandshake)
	if s.Class() != ClassAPI || hs.Class() != ClassHandshake || s.WithClass(Class(42)).Class() != ClassAPI {
		t.Fatalf("classes %s, %s; want api, handshake", s.Class(), hs.Class())
	}
	digest := sha256.Sum256([]byte("x"))
	release := hold(t, d)
	var errs []chan error
	start := func(sign func() error, want [NumClasses]int) {
		t.Helper()
		ch := make(chan error, 1)
		go func() { ch <- sign() }()
		waitUntil(t, fmt.Sprintf("Waiting() = %v", want), func() bool { return d.Waiting() == want })
		errs = append(errs, ch)
	}
	sign := func(s crypto.Signer) func() error {
		return func() error { _, err := s.Sign(nil, digest[:], crypto.SHA256); return err }
	}
	start(sign(s), [NumClasses]int{1, 0, 0})
	start(sign(hs), [NumClasses]int{1, 1, 0})
	start(func() error {
		_, err := hs.SignContext(WithClass(ctx, ClassHousekeeping), digest[:], crypto.SHA256)
		return err
	}, [NumClasses]int{1, 1, 1})
	start(func() error { _, err := s.SignContext(ctx, digest[:], crypto.SHA256); return err }, [NumClasses]int{2, 1, 1})
	start(sign(SignerWithClass(s, ClassHousekeeping)), [NumClasses]int{2, 1, 2})
	release()
	for _, ch := range errs {
		if err := <-ch; err != nil {
			t.Error(err)
		}
	}
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if SignerWithClass(priv, ClassHandshake) != crypto.Signer(priv) {
		t.Fatal("SignerWithClass changed a signer that is not the TPM's")
	}
}

// classedOp runs a real TPM signature in class c and records, from the
// tape, how many operations of other classes got the TPM between the
// moment it asked and the moment it got it.
type classedOp struct {
	d  *Device
	k  *Key
	tp *tape
}

func (o classedOp) run(ctx context.Context, c Class) (others int, err error) {
	enq := o.tp.len()
	var at int
	digest := sha256.Sum256([]byte(c.String()))
	err = o.d.do(WithClass(ctx, c), func() error {
		at = o.tp.len()
		o.tp.add(c.String())
		obj, err := o.d.load(o.k)
		if err != nil {
			return err
		}
		_, _, err = o.d.ecdsaSign(obj, o.k.blob.Auth, digest[:], tpm2.TPMAlgSHA256)
		return err
	})
	if err != nil {
		return 0, err
	}
	o.tp.mu.Lock()
	defer o.tp.mu.Unlock()
	for _, cl := range o.tp.log[enq:at] {
		if cl != c.String() {
			others++
		}
	}
	return others, nil
}

// flood keeps n operations of class c asking for the TPM until stop
// closes; any error is a test failure (n is within the class's depth).
func flood(t *testing.T, op classedOp, c Class, n int, stop <-chan struct{}, wg *sync.WaitGroup) {
	for range n {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := op.run(context.Background(), c); err != nil {
					t.Errorf("%s flood: %v", c, err)
					return
				}
			}
		})
	}
}

// A flood of handshakes and housekeeping that fills their queues does not
// hold API operations back: each waits at most the operation running plus
// one round of the others' turns (2 + 1), whatever the flood's size; a
// FIFO queue would make it wait behind the whole flood.
func TestQueueAPIThroughFlood(t *testing.T) {
	t.Parallel()
	d := openQ(t, Config{QueueDepth: 64, QueueWait: time.Minute}) // depths 64, 16, 8
	ctx := context.Background()
	k, err := d.CreateKey(ctx, P256)
	if err != nil {
		t.Fatal(err)
	}
	op := classedOp{d: d, k: k, tp: &tape{}}
	stop := make(chan struct{})
	var floodWG sync.WaitGroup
	flood(t, op, ClassHandshake, 16, stop, &floodWG)
	flood(t, op, ClassHousekeeping, 8, stop, &floodWG)
	defer floodWG.Wait()
	defer close(stop)
	waitUntil(t, "the flood fills the queues", func() bool {
		w := d.Waiting()
		return w[ClassHandshake] >= 12 && w[ClassHousekeeping] >= 6
	})

	const workers, perWorker = 4, 25
	var (
		wg      sync.WaitGroup
		worst   atomic.Int64
		apiErrs atomic.Int64
	)
	for range workers {
		wg.Go(func() {
			for range perWorker {
				others, err := op.run(ctx, ClassAPI)
				if err != nil {
					apiErrs.Add(1)
					t.Errorf("API operation under the flood: %v", err)
					return
				}
				for {
					w := worst.Load()
					if int64(others) <= w || worst.CompareAndSwap(w, int64(others)) {
						break
					}
				}
			}
		})
	}
	wg.Wait()
	// 1 running + 2 handshakes + 1 housekeeping, and 2 for the moments
	// between reading the tape and joining the queue.
	const bound = 6
	if w := worst.Load(); w > bound {
		t.Fatalf("an API operation waited for %d operations of other classes, want at most %d", w, bound)
	}
	t.Logf("API operations waited for at most %d operations of other classes", worst.Load())
}

// A steady API flood does not starve housekeeping: each housekeeping
// operation gets the TPM after at most one round of API turns (8) and the
// operation running.
func TestQueueHousekeepingNotStarved(t *testing.T) {
	t.Parallel()
	d := openQ(t, Config{QueueWait: 10 * time.Second})
	ctx := context.Background()
	k, err := d.CreateKey(ctx, P256)
	if err != nil {
		t.Fatal(err)
	}
	op := classedOp{d: d, k: k, tp: &tape{}}
	stop := make(chan struct{})
	var floodWG sync.WaitGroup
	flood(t, op, ClassAPI, 16, stop, &floodWG)
	defer floodWG.Wait()
	defer close(stop)
	waitUntil(t, "the API flood fills its queue", func() bool { return d.Waiting()[ClassAPI] >= 12 })
	worst := 0
	for range 20 {
		others, err := op.run(ctx, ClassHousekeeping)
		if err != nil {
			t.Fatalf("housekeeping under an API flood: %v", err)
		}
		worst = max(worst, others)
	}
	const bound = 8 + 1 + 2 // a round, the one running, the read-to-queue moments
	if worst > bound {
		t.Fatalf("housekeeping waited for %d API operations, want at most %d", worst, bound)
	}
	t.Logf("housekeeping waited for at most %d API operations", worst)
}

// Many operations of random classes, deadlines and cancellations: one
// owner at a time, no waiter left behind, the token never lost.
func TestQueueStress(t *testing.T) {
	t.Parallel()
	d := openQ(t, Config{QueueDepth: 4, QueueWait: 2 * time.Millisecond})
	var (
		wg      sync.WaitGroup
		owners  atomic.Int32
		ran     atomic.Int64
		refused atomic.Int64
	)
	for g := range 24 {
		wg.Go(func() {
			r := mrand.New(mrand.NewPCG(uint64(g), 1))
			for range 300 {
				ctx, cancel := context.WithCancel(context.Background())
				if r.IntN(8) == 0 {
					go cancel()
				}
				err := d.do(WithClass(ctx, Class(r.IntN(int(NumClasses)))), func() error {
					if n := owners.Add(1); n != 1 {
						t.Errorf("%d owners at once", n)
					}
					for range r.IntN(200) {
						runtime.Gosched()
					}
					owners.Add(-1)
					return nil
				})
				cancel()
				switch {
				case err == nil:
					ran.Add(1)
				case errors.Is(err, ErrBusy), errors.Is(err, context.Canceled):
					refused.Add(1)
				default:
					t.Errorf("operation: %v", err)
				}
			}
		})
	}
	wg.Wait()
	t.Logf("%d ran, %d refused", ran.Load(), refused.Load())
	if got := d.Waiting(); got != [NumClasses]int{} {
		t.Fatalf("Waiting() = %v when all is done", got)
	}
	d.q.mu.Lock()
	busy, total := d.q.busy, d.q.total
	d.q.mu.Unlock()
	if busy || total != 0 {
		t.Fatalf("queue busy=%v with %d waiters when all is done", busy, total)
	}
	if err := d.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// The wait budget bounds the wait and the operation together: patience
// leaves room for two average operations, and the average follows the
// operations' hold times, one slow key generation weighing little.
func TestQueueBudgetArithmetic(t *testing.T) {
	t.Parallel()
	var q queue
	q.init(Config{QueueWait: time.Second}.withDefaults())
	ms := time.Millisecond
	for _, tc := range []struct {
		name     string
		observed []time.Duration
		avg      time.Duration
		patience time.Duration
	}{
		{"nothing ran yet", nil, 0, time.Second},
		{"first sample taken as it is", []time.Duration{100 * ms}, 100 * ms, 800 * ms},
		{"one eighth of each new sample", []time.Duration{100 * ms, 180 * ms}, 110 * ms, 780 * ms},
		{"a key generation counts a quarter of the budget", []time.Duration{time.Minute}, 250 * ms, 500 * ms},
		{"patience keeps a quarter of the budget", []time.Duration{250 * ms, 250 * ms}, 250 * ms, 500 * ms},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q.opNanos.Store(0)
			for _, d := range tc.observed {
				q.observe(d)
			}
			if got := q.expected(); got != tc.avg {
				t.Errorf("average %v, want %v", got, tc.avg)
			}
			if got := q.patience(); got != tc.patience {
				t.Errorf("patience %v, want %v", got, tc.patience)
			}
		})
	}
	q.opNanos.Store(int64(400 * ms))
	if got := q.patience(); got != 250*ms {
		t.Errorf("patience with 400 ms operations %v, want the floor of 250 ms", got)
	}
}

// An operation that would find more operations ahead of it than fit in
// its patience is refused at once, and Saturated says so beforehand; the
// operations already waiting keep their turns.
func TestQueueRefusesWhatWouldOutlastTheBudget(t *testing.T) {
	t.Parallel()
	d := openQ(t, Config{QueueDepth: 64, QueueWait: time.Minute})
	ctx := context.Background()
	var tp tape
	release := hold(t, d)
	d.q.opNanos.Store(int64(6 * time.Second)) // patience 48 s: eight operations ahead (the running one included)
	var errs []<-chan error
	for i := range 8 {
		if d.Saturated(ClassAPI) {
			t.Fatalf("saturated with %d waiting", i)
		}
		errs = append(errs, enqueue(t, d, ctx, ClassAPI, fmt.Sprint("api", i), &tp))
	}
	if !d.Saturated(ClassAPI) || !d.Saturated(ClassHousekeeping) {
		t.Error("not saturated with nine operations' worth ahead")
	}
	err := d.do(ctx, func() error { return errors.New("ran") })
	if !errors.Is(err, ErrBusy) || err.Error() != "TPM busy: the operations ahead would outlast the 1m0s wait for the TPM" {
		t.Errorf("the tenth operation: %v, want ErrBusy at once", err)
	}
	release()
	wantNil(t, "queued operation", errs...)
	if got := tp.String(); got != "api0 api1 api2 api3 api4 api5 api6 api7" {
		t.Errorf("ran %q", got)
	}
}

// waits records what an Observer hears of waits.
type waits struct {
	mu  sync.Mutex
	got []string
}

func (w *waits) CommandDone(string, time.Duration) {}

func (w *waits) Waited(c Class, took time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.got = append(w.got, fmt.Sprintf("%s %v", c, took > 0))
}

// The Observer hears every operation's wait, in its class: zero for one
// that found the TPM free, more for one that queued.
func TestQueueObserverHearsWaits(t *testing.T) {
	t.Parallel()
	var w waits
	d := openQ(t, Config{QueueWait: time.Minute, Observer: &w})
	ctx := context.Background()
	w.mu.Lock()
	w.got = nil // Open's own operations
	w.mu.Unlock()
	var tp tape
	release := hold(t, d)
	queued := enqueue(t, d, ctx, ClassHousekeeping, "hk", &tp)
	release()
	wantNil(t, "queued operation", queued)
	w.mu.Lock()
	defer w.mu.Unlock()
	if got := strings.Join(w.got, ", "); got != "api false, housekeeping true" {
		t.Errorf("waits heard: %s", got)
	}
}
