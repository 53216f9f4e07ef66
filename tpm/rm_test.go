package tpm_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/brokerd/brokerd/internal/swtpmtest"
	"github.com/brokerd/brokerd/internal/tpmproxy"
	"github.com/brokerd/brokerd/tpm"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// The rules of a kernel resource manager (/dev/tpmrm0), played on swtpm
// (tpm.ResourceManagerRules), against swtpm's own (flush everything), and
// what both share: warnings retried, one command per signature with a
// cached key, a persistent storage root key.

// proxied starts a swtpm with a proxy in front and opens a device on the
// proxy with cfg.
func proxied(t testing.TB, cfg tpm.Config, opts tpmproxy.Options) (*tpm.Device, *tpmproxy.Proxy, *swtpmtest.TPM) {
	t.Helper()
	sw := swtpmtest.Start(t)
	return openProxied(t, sw, cfg, opts)
}

func openProxied(t testing.TB, sw *swtpmtest.TPM, cfg tpm.Config, opts tpmproxy.Options) (*tpm.Device, *tpmproxy.Proxy, *swtpmtest.TPM) {
	t.Helper()
	p, err := tpmproxy.Start(t.TempDir(), sw.Socket(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	cfg.Address = "swtpm:" + p.Socket()
	d, err := tpm.Open(cfg, testLogger(t))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d, p, sw
}

// direct runs fn on a connection of its own to swtpm, as another program
// would (swtpm serves one connection at a time: it waits for brokerd's to
// go idle).
func direct(t testing.TB, sw *swtpmtest.TPM, fn func(tpm transport.TPM)) {
	t.Helper()
	c, err := net.Dial("unix", sw.Socket())
	if err != nil {
		t.Fatal(err)
	}
	tr := transport.FromReadWriteCloser(c)
	defer tr.Close()
	fn(tr)
}

// foreignSession starts an HMAC session as another program on the box
// (systemd-cryptsetup, a tpm2-tools user) holds one, and returns its handle.
func foreignSession(t testing.TB, sw *swtpmtest.TPM) uint32 {
	t.Helper()
	var h uint32
	direct(t, sw, func(tp transport.TPM) {
		rsp, err := tpm2.StartAuthSession{
			TPMKey: tpm2.TPMRHNull, Bind: tpm2.TPMRHNull,
			NonceCaller: tpm2.TPM2BNonce{Buffer: make([]byte, 16)},
			SessionType: tpm2.TPMSEHMAC,
			Symmetric:   tpm2.TPMTSymDef{Algorithm: tpm2.TPMAlgNull},
			AuthHash:    tpm2.TPMAlgSHA256,
		}.Execute(tp)
		if err != nil {
			t.Fatalf("another program's session: %v", err)
		}
		h = uint32(rsp.SessionHandle)
	})
	return h
}

// handleLog records the first handle of every command of one code: the
// handles a device flushes, the parents it loads keys under.
type handleLog struct {
	cc tpm2.TPMCC
	mu sync.Mutex
	hs []uint32
}

// record is a proxy's Command hook: it records, and lets the command pass.
func (l *handleLog) record(cmd []byte) []byte {
	if binary.BigEndian.Uint32(cmd[6:10]) == uint32(l.cc) {
		l.mu.Lock()
		l.hs = append(l.hs, binary.BigEndian.Uint32(cmd[10:14]))
		l.mu.Unlock()
	}
	return nil
}

func (l *handleLog) has(h uint32) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Contains(l.hs, h)
}

func (l *handleLog) last() uint32 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.hs) == 0 {
		return 0
	}
	return l.hs[len(l.hs)-1]
}

// signerFor makes a key of alg on d and returns its signer.
func signerFor(t testing.TB, d *tpm.Device, alg tpm.Algorithm) *tpm.Signer {
	t.Helper()
	k, err := d.CreateKey(context.Background(), alg)
	if err != nil {
		t.Fatalf("CreateKey %s: %v", alg, err)
	}
	s, err := d.Signer(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// stall holds the commands of one code in the proxy, as a TPM that stops
// answering does, until released.
type stall struct {
	cc      uint32
	on      atomic.Bool
	release chan struct{}
}

func (s *stall) hold(cmd []byte) {
	if s.on.Load() && binary.BigEndian.Uint32(cmd[6:10]) == s.cc {
		<-s.release
	}
}

// TestStuckCommandAndOthersSessions: a command the TPM does not answer
// fails within its deadline, so does the next one while the TPM stays
// stuck, and the first signature after the TPM answers again succeeds.
// Under a resource manager's rules, the recovery flushes nothing brokerd
// did not make: another program's session lives on. Under swtpm's rules
// (no resource manager: whatever is loaded is a leftover), it is flushed.
func TestStuckCommandAndOthersSessions(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name        string
		rm          bool
		wantSession bool
	}{
		{"resource manager", true, true},
		{"swtpm", false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			const deadline = time.Second
			cfg := tpm.Config{CommandTimeout: deadline}
			if c.rm {
				cfg = tpm.ResourceManagerRules(cfg)
			}
			st := &stall{cc: uint32(tpm2.TPMCCSign), release: make(chan struct{})}
			fl := handleLog{cc: tpm2.TPMCCFlushContext}
			d, _, sw := proxied(t, cfg, tpmproxy.Options{Command: func(cmd []byte) []byte {
				st.hold(cmd)
				return fl.record(cmd)
			}})
			s := signerFor(t, d, tpm.P256)
			mustSign(t, s)
			other := foreignSession(t, sw)

			st.on.Store(true)
			for i := range 2 { // the stuck command, then one behind it
				start := time.Now()
				_, err := s.Sign(nil, sha(crypto.SHA256, []byte("stuck")), crypto.SHA256)
				if !errors.Is(err, tpm.ErrUnavailable) {
					t.Fatalf("sign %d on a stuck TPM: %v, want ErrUnavailable", i, err)
				}
				if waited := time.Since(start); waited > 3*deadline {
					t.Fatalf("sign %d on a stuck TPM failed after %v; the deadline is %v", i, waited, deadline)
				}
			}
			st.on.Store(false)
			close(st.release) // the TPM answers again
			mustSign(t, s)

			hs, err := tpm.SessionHandles(d)
			if err != nil {
				t.Fatal(err)
			}
			if got := slices.Contains(hs, other); got != c.wantSession {
				t.Fatalf("another program's session 0x%08x still loaded: %v, want %v (sessions now %x)", other, got, c.wantSession, hs)
			}
			if flushed := fl.has(other); flushed == c.wantSession {
				t.Fatalf("brokerd flushed another program's session: %v, want %v", flushed, !c.wantSession)
			}
		})
	}
}

// TestOneCommandPerSignature: with its key loaded and its session open, a
// signature is one TPM command (TPM2_Sign or TPM2_RSA_Decrypt), under both
// rules; and under a resource manager's, the device keeps only the key in
// use loaded (each more would cost the resource manager a context load and
// save around every command), while under swtpm's it keeps what fits.
func TestOneCommandPerSignature(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name       string
		rm         bool
		wantCached int
	}{
		{"resource manager", true, 1},
		{"swtpm", false, 3}, // the SRK and both keys
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			cfg := tpm.Config{}
			if c.rm {
				cfg = tpm.ResourceManagerRules(cfg)
			}
			d, p, _ := proxied(t, cfg, tpmproxy.Options{})
			for alg, cmd := range map[tpm.Algorithm]string{tpm.RSA2048: "TPM2_RSA_Decrypt", tpm.P256: "TPM2_Sign"} {
				s := signerFor(t, d, alg)
				mustSign(t, s) // loads it (again, under a resource manager's rules)
				before, sent, counts := p.Total(), d.Commands(), d.CommandCounts()
				mustSign(t, s)
				if n, m := p.Total()-before, d.Commands()-sent; n != 1 || m != 1 {
					t.Fatalf("a signature with a loaded key took %d TPM commands (%d counted by the device), want 1", n, m)
				}
				if n := d.CommandCounts()[cmd] - counts[cmd]; n != 1 {
					t.Fatalf("%s counted %d times for one signature", cmd, n)
				}
			}
			if n, err := d.CachedObjects(context.Background()); err != nil || n != c.wantCached {
				t.Fatalf("cached objects: %d, %v; want %d", n, err, c.wantCached)
			}
		})
	}
}

// rcAnswer is a response with only a return code.
func rcAnswer(rc tpm2.TPMRC) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(tpm2.TPMSTNoSessions))
	b = binary.BigEndian.AppendUint32(b, 10)
	return binary.BigEndian.AppendUint32(b, uint32(rc))
}

// TestWarningsRetried: a TPM that answers a signature with TPM_RC_RETRY,
// TPM_RC_YIELDED or TPM_RC_TESTING did nothing with it: the device sends
// it again (in the same session, as it is) and the signature succeeds.
// Other warnings are not retried, and retries stop at the deadline.
func TestWarningsRetried(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name      string
		rc        tpm2.TPMRC
		times     int // answered with rc before the TPM gets it
		wantErr   bool
		wantSends int // Sign commands sent; 0: more than 2
	}{
		{"retry", tpm2.TPMRCRetry, 2, false, 3},
		{"yielded", tpm2.TPMRCYielded, 1, false, 2},
		{"testing", tpm2.TPMRCTesting, 3, false, 4},
		{"lockout is not retried", tpm2.TPMRCLockout, 1, true, 1},
		{"retry until the deadline", tpm2.TPMRCRetry, 1 << 30, true, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var armed atomic.Bool
			var left atomic.Int64
			left.Store(int64(c.times))
			d, p, _ := proxied(t, tpm.Config{CommandTimeout: 300 * time.Millisecond}, tpmproxy.Options{Command: func(cmd []byte) []byte {
				if armed.Load() && binary.BigEndian.Uint32(cmd[6:10]) == uint32(tpm2.TPMCCSign) && left.Add(-1) >= 0 {
					return rcAnswer(c.rc)
				}
				return nil
			}})
			s := signerFor(t, d, tpm.P256)
			mustSign(t, s)
			armed.Store(true)
			before := p.Count(uint32(tpm2.TPMCCSign))
			digest := sha(crypto.SHA256, []byte("retried"))
			sig, err := s.Sign(nil, digest, crypto.SHA256)
			sends := p.Count(uint32(tpm2.TPMCCSign)) - before
			if c.wantErr {
				if !errors.Is(err, c.rc) {
					t.Fatalf("sign: %v, want %v", err, c.rc)
				}
			} else if err != nil || !ecdsa.VerifyASN1(s.Public().(*ecdsa.PublicKey), digest, sig) {
				t.Fatalf("sign after %d×%v: %v", c.times, c.rc, err)
			}
			if (c.wantSends == 0 && sends <= 2) || (c.wantSends != 0 && sends != c.wantSends) {
				t.Fatalf("TPM2_Sign sent %d times, want %d (0: more than 2)", sends, c.wantSends)
			}
		})
	}
}

// TestPersistentSRK: PersistSRK makes brokerd's storage root key
// persistent at 0x81000001; a device opened later uses it as the parent
// of the keys made before (same key, same Name), and keeps no transient
// SRK. A persistent key of another template there is left alone, and the
// device goes on with a transient SRK.
func TestPersistentSRK(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name       string
		occupy     bool // another key at 0x81000001 first
		want       tpm.SRKPersistence
		wantParent func(uint32) bool
	}{
		{"free", false, tpm.SRKMadePersistent, func(h uint32) bool { return h == 0x81000001 }},
		{"taken by another template", true, tpm.SRKHandleTaken, func(h uint32) bool { return h>>24 == 0x80 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			sw := swtpmtest.Start(t)
			if c.occupy {
				persistOther(t, sw)
			}
			ctx := context.Background()
			d, _, _ := openProxied(t, sw, tpm.Config{}, tpmproxy.Options{})
			k, err := d.CreateKey(ctx, tpm.P256)
			if err != nil {
				t.Fatal(err)
			}
			srk := d.SRKName()
			got, err := d.PersistSRK(ctx)
			if err != nil || got != c.want {
				t.Fatalf("PersistSRK: %v, %v; want %v", got, err, c.want)
			}
			d.Close()

			lp := handleLog{cc: tpm2.TPMCCLoad}
			d2, p, _ := openProxied(t, sw, tpm.Config{}, tpmproxy.Options{Command: lp.record})
			if string(d2.SRKName()) != string(srk) {
				t.Fatal("the storage root key's Name changed")
			}
			s, _ := d2.Signer(k)
			mustSign(t, s)
			if h := lp.last(); !c.wantParent(h) {
				t.Fatalf("the key loaded under handle 0x%08x", h)
			}
			persistent, _ := d2.PersistentSRK(ctx)
			if persistent != (c.want == tpm.SRKMadePersistent) {
				t.Fatalf("device uses a persistent SRK: %v", persistent)
			}
			if again, err := d2.PersistSRK(ctx); err != nil || (persistent && again != tpm.SRKPersistent) {
				t.Fatalf("PersistSRK again: %v, %v", again, err)
			}
			if n := p.Count(uint32(tpm2.TPMCCEvictControl)); n != 0 {
				t.Fatalf("EvictControl sent %d times by the second device", n)
			}
		})
	}
}

// persistOther persists an RSA storage key (not brokerd's template) at
// 0x81000001, as another tool might have.
func persistOther(t *testing.T, sw *swtpmtest.TPM) {
	t.Helper()
	direct(t, sw, func(tp transport.TPM) {
		rsp, err := tpm2.CreatePrimary{
			PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
			InPublic:      tpm2.New2B(tpm2.RSASRKTemplate),
		}.Execute(tp)
		if err != nil {
			t.Fatal(err)
		}
		defer tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}.Execute(tp)
		_, err = tpm2.EvictControl{
			Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
			ObjectHandle:     tpm2.NamedHandle{Handle: rsp.ObjectHandle, Name: rsp.Name},
			PersistentHandle: 0x81000001,
		}.Execute(tp)
		if err != nil {
			t.Fatal(err)
		}
	})
}

// TestEKKeyReloadsWithoutEK: a key under an endorsement key loads again
// from its saved context: no endorsement key is derived, and no policy
// session started, on the signing path.
func TestEKKeyReloadsWithoutEK(t *testing.T) {
	t.Parallel()
	d, p, _ := proxied(t, tpm.Config{}, tpmproxy.Options{})
	ctx := context.Background()
	ekPub, err := d.EndorsementKey(ctx, tpm.ParentECCEK)
	if err != nil {
		t.Fatal(err)
	}
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	w, err := tpm.WrapKey(ekPub, priv)
	if err != nil {
		t.Fatal(err)
	}
	k, err := d.ImportWrapped(ctx, w)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := d.Signer(k)
	mustSign(t, s)
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	cp, sess := p.Count(uint32(tpm2.TPMCCCreatePrimary)), p.Count(uint32(tpm2.TPMCCPolicySecret))
	mustSign(t, s)
	if n, m := p.Count(uint32(tpm2.TPMCCCreatePrimary))-cp, p.Count(uint32(tpm2.TPMCCPolicySecret))-sess; n != 0 || m != 0 {
		t.Fatalf("reloading a key under the EK took %d CreatePrimary and %d PolicySecret, want 0", n, m)
	}
}

// TestKeygenTimeoutBelowTheKernels: behind a resource manager, a key
// generation deadline below the kernel's 300 s is warned about at Open;
// the default is not, and neither is any deadline on swtpm.
func TestKeygenTimeoutBelowTheKernels(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name   string
		rm     bool
		keygen time.Duration
		warns  bool
	}{
		{"resource manager, 3 minutes", true, 3 * time.Minute, true},
		{"resource manager, default", true, 0, false},
		{"swtpm, 3 minutes", false, 3 * time.Minute, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			cfg := tpm.Config{Address: swtpmtest.Start(t).Address(), KeygenTimeout: c.keygen}
			if c.rm {
				cfg = tpm.ResourceManagerRules(cfg)
			}
			var logs strings.Builder
			d, err := tpm.Open(cfg, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})))
			if err != nil {
				t.Fatal(err)
			}
			d.Close()
			if got := strings.Contains(logs.String(), "keygen_timeout"); got != c.warns {
				t.Fatalf("warned: %v, want %v; logs: %s", got, c.warns, logs.String())
			}
		})
	}
}
