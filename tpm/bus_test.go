package tpm_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/binary"
	"fmt"
	"sync"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/brokerd/brokerd/internal/swtpmtest"
	"github.com/brokerd/brokerd/internal/tpmproxy"
	"github.com/brokerd/brokerd/tpm"
)

// bus records the traffic between brokerd and a swtpm, as a probe on a
// discrete TPM's bus would.
type bus struct {
	p         *tpmproxy.Proxy
	mu        sync.Mutex
	commands  [][]byte
	responses [][]byte
}

// startBus starts a swtpm behind a recording proxy; answer, when set, may
// answer a command in the TPM's place (see tpmproxy.Options.Command).
func startBus(t testing.TB, answer func(cmd []byte) []byte) *bus {
	t.Helper()
	sw := swtpmtest.Start(t)
	b := &bus{}
	p, err := tpmproxy.Start(t.TempDir(), sw.Socket(), tpmproxy.Options{
		Command: func(cmd []byte) []byte {
			b.mu.Lock()
			b.commands = append(b.commands, cmd)
			b.mu.Unlock()
			if answer != nil {
				return answer(cmd)
			}
			return nil
		},
		Mutate: func(_ uint32, rsp []byte) []byte {
			b.mu.Lock()
			b.responses = append(b.responses, append([]byte(nil), rsp...))
			b.mu.Unlock()
			return rsp
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	b.p = p
	return b
}

func (b *bus) open(t testing.TB, cfg tpm.Config) *tpm.Device {
	t.Helper()
	cfg.Address = "swtpm:" + b.p.Socket()
	d, err := tpm.Open(cfg, testLogger(t))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// find reports where a secret shows on the bus: any 8 bytes of it, at
// any position of any command (or response).
func (b *bus) find(secret []byte, responses bool) (string, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	msgs := b.commands
	if responses {
		msgs = append(append([][]byte(nil), msgs...), b.responses...)
	}
	for i := 0; i+8 <= len(secret); i++ {
		for _, m := range msgs {
			if bytes.Contains(m, secret[i:i+8]) {
				return commandName(m), true
			}
		}
	}
	return "", false
}

// commandName names a command (or response) by its code for messages.
func commandName(m []byte) string {
	if len(m) < 10 {
		return "short message"
	}
	return fmt.Sprintf("command or response code %#x", binary.BigEndian.Uint32(m[6:10]))
}

// commands returns the recorded commands with command code cc.
func (b *bus) commandsWith(cc tpm2.TPMCC) [][]byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out [][]byte
	for _, m := range b.commands {
		if tpm2.TPMCC(binary.BigEndian.Uint32(m[6:10])) == cc {
			out = append(out, m)
		}
	}
	return out
}

// TestNoAuthValueOnTheBus: whatever brokerd does with keys (create,
// import, import a wrapped key and change its auth value, seal and
// unseal, sign RS, PS and ES), no key's auth value, no sealed secret and
// no imported private key crosses the bus in clear. A control run with
// password sessions shows that the recording would see them.
func TestNoAuthValueOnTheBus(t *testing.T) {
	t.Parallel()
	b := startBus(t, nil)
	d := b.open(t, tpm.Config{})
	ctx := context.Background()
	secrets := map[string][]byte{}
	var keys []*tpm.Key
	for _, alg := range []tpm.Algorithm{tpm.RSA2048, tpm.P256} {
		k, err := d.CreateKey(ctx, alg)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	secrets["imported RSA prime"] = rsaKey.Primes[0].Bytes()
	secrets["imported EC scalar"], _ = ecKey.Bytes()
	for _, priv := range []crypto.Signer{rsaKey, ecKey} {
		k, err := d.ImportKey(ctx, priv)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
		for _, p := range []tpm.Parent{tpm.ParentECCEK, tpm.ParentRSAEK} {
			ek, err := d.EndorsementKey(ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			w, err := tpm.WrapKey(ek, priv)
			if err != nil {
				t.Fatal(err)
			}
			k, err := d.ImportWrapped(ctx, w)
			if err != nil {
				t.Fatalf("ImportWrapped under %s: %v", p, err)
			}
			keys = append(keys, k)
		}
	}
	secret := bytes.Repeat([]byte("sealed secret!"), 3)
	secrets["sealed secret"] = secret
	for _, pcrs := range [][]int{nil, {16}} {
		blob, err := d.Seal(ctx, secret, pcrs)
		if err != nil {
			t.Fatal(err)
		}
		secrets[fmt.Sprintf("auth value of the object sealed to PCRs %v", pcrs)] = blob.Auth
		if got, err := d.Unseal(ctx, blob); err != nil || !bytes.Equal(got, secret) {
			t.Fatalf("Unseal = %q, %v", got, err)
		}
	}
	for i, k := range keys {
		secrets["auth value of key "+k.String()] = k.Blob().Auth
		s, _ := d.Signer(k)
		signAll(t, s, i)
	}
	for what, s := range secrets {
		if where, found := b.find(s, true); found {
			t.Errorf("the %s is on the bus in clear (%s)", what, where)
		}
	}
	for _, cc := range []tpm2.TPMCC{tpm2.TPMCCRSADecrypt, tpm2.TPMCCSign, tpm2.TPMCCObjectChangeAuth, tpm2.TPMCCUnseal, tpm2.TPMCCCreate, tpm2.TPMCCImport} {
		if len(b.commandsWith(cc)) == 0 {
			t.Errorf("no command %#x went over the bus: the test no longer covers it", uint32(cc))
		}
	}
	checkBusControl(t)
}

// checkBusControl: with a password session, the auth value is on the bus,
// and bus.find sees it.
func checkBusControl(t *testing.T) {
	ctl := startBus(t, nil)
	dc := ctl.open(t, tpm.Config{})
	k, err := dc.CreateKey(context.Background(), tpm.P256)
	if err != nil {
		t.Fatal(err)
	}
	tpm.UsePasswordSessions(dc, true)
	s, _ := dc.Signer(k)
	signAll(t, s, 0)
	if _, found := ctl.find(k.Blob().Auth, false); !found {
		t.Fatal("control: a password session's auth value was not found on the bus; the search is broken")
	}
}

// signAll signs with every scheme and hash the key takes.
func signAll(t *testing.T, s *tpm.Signer, i int) {
	t.Helper()
	for _, h := range []crypto.Hash{crypto.SHA256, crypto.SHA512} {
		digest := sha(h, []byte{byte(i)})
		opts := []crypto.SignerOpts{h}
		if _, ok := s.Public().(*rsa.PublicKey); ok {
			opts = append(opts, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: h})
		}
		for _, o := range opts {
			sig, err := s.Sign(nil, digest, o)
			if err != nil {
				t.Fatalf("sign with %T %v: %v", o, h, err)
			}
			if !verifyAny(s.Public(), h, digest, sig, o) {
				t.Fatalf("signature with %T %v does not verify", o, h)
			}
		}
	}
}

func verifyAny(pub crypto.PublicKey, h crypto.Hash, digest, sig []byte, opts crypto.SignerOpts) bool {
	if _, pss := opts.(*rsa.PSSOptions); pss {
		return rsa.VerifyPSS(pub.(*rsa.PublicKey), h, digest, sig, &rsa.PSSOptions{SaltLength: h.Size()}) == nil
	}
	return verify(pub, h, digest, sig)
}
