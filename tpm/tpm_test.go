package tpm_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport/linuxudstpm"

	"github.com/brokerd/brokerd/internal/swtpmtest"
	"github.com/brokerd/brokerd/tpm"
)

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// open starts a swtpm and opens a Device on it, checking at the end that
// the device leaves no transient object behind once closed.
func open(t testing.TB, cfg tpm.Config) (*tpm.Device, *swtpmtest.TPM) {
	t.Helper()
	sw := swtpmtest.Start(t)
	cfg.Address = sw.Address()
	d, err := tpm.Open(cfg, testLogger(t))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d, sw
}

func sha(h crypto.Hash, msg []byte) []byte {
	hh := h.New()
	hh.Write(msg)
	return hh.Sum(nil)
}

func TestCreateSignVerify(t *testing.T) {
	t.Parallel()
	d, _ := open(t, tpm.Config{})
	ctx := context.Background()
	msg := []byte("a string to sign")
	for _, alg := range []tpm.Algorithm{tpm.RSA2048, tpm.RSA3072, tpm.P256, tpm.P384} {
		t.Run(string(alg), func(t *testing.T) {
			k, err := d.CreateKey(ctx, alg)
			if err != nil {
				t.Fatalf("CreateKey: %v", err)
			}
			if k.Algorithm() != alg {
				t.Fatalf("algorithm = %s, want %s", k.Algorithm(), alg)
			}
			s, err := d.Signer(k)
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range []crypto.Hash{crypto.SHA256, crypto.SHA512} {
				digest := sha(h, msg)
				switch pub := s.Public().(type) {
				case *rsa.PublicKey:
					sig, err := s.Sign(rand.Reader, digest, h)
					if err != nil {
						t.Fatalf("sign PKCS1v15 %v: %v", h, err)
					}
					if err := rsa.VerifyPKCS1v15(pub, h, digest, sig); err != nil {
						t.Fatalf("verify PKCS1v15 %v: %v", h, err)
					}
					sig, err = s.Sign(rand.Reader, digest, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: h})
					if err != nil {
						t.Fatalf("sign PSS %v: %v", h, err)
					}
					if err := rsa.VerifyPSS(pub, h, digest, sig, &rsa.PSSOptions{SaltLength: h.Size()}); err != nil {
						t.Fatalf("verify PSS %v (salt = hash length): %v", h, err)
					}
				case *ecdsa.PublicKey:
					sig, err := s.Sign(rand.Reader, digest, h)
					if err != nil {
						t.Fatalf("sign ECDSA %v: %v", h, err)
					}
					if !ecdsa.VerifyASN1(pub, digest, sig) {
						t.Fatalf("ECDSA %v signature does not verify", h)
					}
				}
			}
		})
	}
}

func TestRSAKeysAreDecryptWithSchemeNull(t *testing.T) {
	t.Parallel()
	d, _ := open(t, tpm.Config{})
	ctx := context.Background()
	created, err := d.CreateKey(ctx, tpm.RSA2048)
	if err != nil {
		t.Fatal(err)
	}
	priv, _ := rsa.GenerateKey(rand.Reader, 2048)
	imported, err := d.ImportKey(ctx, priv)
	if err != nil {
		t.Fatal(err)
	}
	for name, k := range map[string]*tpm.Key{"created": created, "imported": imported} {
		attrs, scheme := k.Attributes()
		if !attrs.Decrypt || !attrs.SignEncrypt || scheme != tpm2.TPMAlgNull || attrs.Restricted {
			t.Errorf("%s key: decrypt=%v sign=%v restricted=%v scheme=%v; want sign+decrypt, unrestricted, scheme NULL",
				name, attrs.Decrypt, attrs.SignEncrypt, attrs.Restricted, scheme)
		}
		if len(k.Blob().Auth) != 32 {
			t.Errorf("%s key: auth value of %d bytes, want 32", name, len(k.Blob().Auth))
		}
	}
	if created.Blob().Parent != tpm.ParentSRK || imported.Blob().Parent != tpm.ParentSRK {
		t.Errorf("parents %s, %s; want srk", created.Blob().Parent, imported.Blob().Parent)
	}
	if a, _ := created.Attributes(); !a.FixedTPM || !a.SensitiveDataOrigin {
		t.Error("created key is not fixedTPM with sensitiveDataOrigin")
	}
	if a, _ := imported.Attributes(); a.FixedTPM || a.SensitiveDataOrigin {
		t.Error("imported key claims to be generated in the TPM")
	}
	if string(created.Blob().Auth) == string(imported.Blob().Auth) {
		t.Error("two keys share an auth value")
	}
}

func TestImportedKeyMatchesSoftware(t *testing.T) {
	t.Parallel()
	d, _ := open(t, tpm.Config{})
	ctx := context.Background()
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	digest := sha(crypto.SHA256, []byte("a string to sign"))
	for name, priv := range map[string]crypto.Signer{"rsa": rsaKey, "p384": ecKey} {
		k, err := d.ImportKey(ctx, priv)
		if err != nil {
			t.Fatalf("%s: ImportKey: %v", name, err)
		}
		if !priv.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(k.Public()) {
			t.Fatalf("%s: imported public key differs", name)
		}
		s, _ := d.Signer(k)
		sig, err := s.Sign(nil, digest, crypto.SHA256)
		if err != nil {
			t.Fatalf("%s: sign: %v", name, err)
		}
		if name == "rsa" {
			want, _ := rsa.SignPKCS1v15(nil, rsaKey, crypto.SHA256, digest)
			if string(sig) != string(want) {
				t.Fatal("TPM PKCS1v15 signature differs from Go's for the same key")
			}
		}
	}
}

func TestSignerRejectsBadInput(t *testing.T) {
	t.Parallel()
	d, _ := open(t, tpm.Config{})
	ctx := context.Background()
	k, err := d.CreateKey(ctx, tpm.RSA2048)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := d.Signer(k)
	cases := []struct {
		name   string
		digest []byte
		opts   crypto.SignerOpts
	}{
		{"short digest", make([]byte, 31), crypto.SHA256},
		{"unsupported hash", make([]byte, 16), crypto.MD5},
		{"no hash", make([]byte, 36), crypto.Hash(0)},
		{"salt too long", make([]byte, 64), &rsa.PSSOptions{Hash: crypto.SHA512, SaltLength: 200}},
	}
	for _, c := range cases {
		if _, err := s.Sign(nil, c.digest, c.opts); err == nil {
			t.Errorf("%s: Sign succeeded", c.name)
		}
	}
}

func TestSealedKey(t *testing.T) {
	t.Parallel()
	d, _ := open(t, tpm.Config{})
	ctx := context.Background()
	priv := referenceKey(t) // RSA-4096: making one takes Go seconds under -race
	if d.Supports(tpm.RSA4096) {
		t.Fatal("swtpm claims RSA-4096 support; the sealed path would not be exercised")
	}
	if _, err := d.ImportKey(ctx, priv); !errors.Is(err, tpm.ErrUnsupported) {
		t.Fatalf("ImportKey(RSA-4096) = %v, want ErrUnsupported", err)
	}
	sk, err := d.SealKey(ctx, priv, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := d.UnsealKey(ctx, sk)
	if err != nil {
		t.Fatal(err)
	}
	if !priv.Equal(got) {
		t.Fatal("unsealed key differs")
	}
	// A flipped ciphertext bit is detected.
	bad := *sk
	bad.Ciphertext = append([]byte(nil), sk.Ciphertext...)
	bad.Ciphertext[len(bad.Ciphertext)-1] ^= 1
	if _, err := d.UnsealKey(ctx, &bad); err == nil {
		t.Fatal("tampered ciphertext decrypted")
	}
	// Auth value is enforced.
	wrongAuth := *sk
	wrongAuth.Seal.Auth = make([]byte, 32)
	if _, err := d.UnsealKey(ctx, &wrongAuth); err == nil {
		t.Fatal("unsealed with a wrong auth value")
	}
}

// referenceKey is the RSA-4096 key of testdata/reference, a public test
// vector.
func referenceKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	data, err := os.ReadFile("../testdata/reference/example.key")
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatal("example.key: no PEM")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k.(*rsa.PrivateKey)
}

func TestSealToPCRs(t *testing.T) {
	t.Parallel()
	d, sw := open(t, tpm.Config{})
	ctx := context.Background()
	secret := []byte("0123456789abcdef0123456789abcdef")
	blob, err := d.Seal(ctx, secret, []int{16})
	if err != nil {
		t.Fatal(err)
	}
	got, err := d.Unseal(ctx, blob)
	if err != nil || string(got) != string(secret) {
		t.Fatalf("Unseal = %q, %v", got, err)
	}
	extendPCR16(t, sw)
	if _, err := d.Unseal(ctx, blob); err == nil {
		t.Fatal("unsealed after the PCR changed")
	}
}

func TestStateFromAnotherTPM(t *testing.T) {
	t.Parallel()
	d1, _ := open(t, tpm.Config{})
	d2, _ := open(t, tpm.Config{})
	ctx := context.Background()
	k, err := d1.CreateKey(ctx, tpm.P256)
	if err != nil {
		t.Fatal(err)
	}
	if string(d1.SRKName()) == string(d2.SRKName()) {
		t.Fatal("two fresh swtpms have the same SRK")
	}
	s, _ := d2.Signer(k)
	_, err = s.Sign(nil, sha(crypto.SHA256, []byte("x")), crypto.SHA256)
	if !errors.Is(err, tpm.ErrWrongTPM) {
		t.Fatalf("sign on another TPM: %v, want ErrWrongTPM", err)
	}
}

// TestMoreKeysThanSlots signs with 8 keys from 8 goroutines, interleaved, on
// a swtpm with 3 transient slots and no resource manager.
func TestMoreKeysThanSlots(t *testing.T) {
	t.Parallel()
	d, _ := open(t, tpm.Config{})
	ctx := context.Background()
	var signers []*tpm.Signer
	for i := range 8 {
		var (
			k   *tpm.Key
			err error
		)
		if i%2 == 0 {
			k, err = d.CreateKey(ctx, tpm.P256)
		} else {
			priv, _ := rsa.GenerateKey(rand.Reader, 2048)
			k, err = d.ImportKey(ctx, priv)
		}
		if err != nil {
			t.Fatalf("key %d: %v", i, err)
		}
		s, _ := d.Signer(k)
		signers = append(signers, s)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8*20)
	for i, s := range signers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 20 {
				digest := sha(crypto.SHA512, []byte{byte(i), byte(j)})
				sig, err := s.Sign(nil, digest, crypto.SHA512)
				if err != nil {
					errs <- err
					return
				}
				if !verify(s.Public(), crypto.SHA512, digest, sig) {
					errs <- errors.New("signature does not verify")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	n, err := d.CachedObjects(ctx)
	if err != nil || n > 3 {
		t.Fatalf("cached objects = %d, %v; want at most 3", n, err)
	}
	hs, err := d.TransientHandles(ctx)
	if err != nil || len(hs) != n {
		t.Fatalf("transient handles %x (err %v), want exactly the %d cached", hs, err, n)
	}
}

func verify(pub crypto.PublicKey, h crypto.Hash, digest, sig []byte) bool {
	switch pub := pub.(type) {
	case *rsa.PublicKey:
		return rsa.VerifyPKCS1v15(pub, h, digest, sig) == nil
	case *ecdsa.PublicKey:
		return ecdsa.VerifyASN1(pub, digest, sig)
	}
	return false
}

func TestECDSARaw(t *testing.T) {
	t.Parallel()
	d, _ := open(t, tpm.Config{})
	ctx := context.Background()
	for alg, size := range map[tpm.Algorithm]int{tpm.P256: 32, tpm.P384: 48} {
		k, err := d.CreateKey(ctx, alg)
		if err != nil {
			t.Fatal(err)
		}
		s, _ := d.Signer(k)
		digest := sha512.Sum512([]byte("m"))
		der, err := s.Sign(nil, digest[:], crypto.SHA512)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := tpm.ECDSARaw(der, size)
		if err != nil {
			t.Fatal(err)
		}
		if len(raw) != 2*size {
			t.Fatalf("%s: raw signature of %d bytes, want %d", alg, len(raw), 2*size)
		}
		r, sv := new(big.Int).SetBytes(raw[:size]), new(big.Int).SetBytes(raw[size:])
		if !ecdsa.Verify(s.Public().(*ecdsa.PublicKey), digest[:], r, sv) {
			t.Fatalf("%s: raw r||s does not verify", alg)
		}
	}
	if _, err := tpm.ECDSARaw([]byte{0x30, 0x00}, 32); err == nil {
		t.Fatal("ECDSARaw accepted an empty sequence")
	}
}

func TestQueueBusy(t *testing.T) {
	t.Parallel()
	d, sw := open(t, tpm.Config{QueueDepth: 2, QueueWait: 200 * time.Millisecond, CommandTimeout: 5 * time.Second})
	ctx := context.Background()
	k, err := d.CreateKey(ctx, tpm.P256)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := d.Signer(k)
	digest := sha256.Sum256([]byte("x"))
	sw.Pause()
	results := make(chan error, 6)
	for range 6 {
		go func() { _, err := s.Sign(nil, digest[:], crypto.SHA256); results <- err }()
	}
	busy := 0
	deadline := time.After(3 * time.Second)
	for range 5 { // one is stuck in the TPM until Resume
		select {
		case err := <-results:
			if !errors.Is(err, tpm.ErrBusy) {
				t.Fatalf("queued sign: %v, want ErrBusy", err)
			}
			busy++
		case <-deadline:
			t.Fatalf("only %d of 5 queued signs returned ErrBusy within 3s", busy)
		}
	}
	sw.Resume()
	if err := <-results; err != nil {
		t.Fatalf("the sign in flight failed after resume: %v", err)
	}
}

// extendPCR16 extends PCR 16 (the debug PCR) over a second connection.
func extendPCR16(t *testing.T, sw *swtpmtest.TPM) {
	t.Helper()
	tr, err := linuxudstpm.Open(sw.Socket())
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	_, err = tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(16), Auth: tpm2.PasswordAuth(nil)},
		Digests:   tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: tpm2.TPMAlgSHA256, Digest: make([]byte, 32)}}},
	}.Execute(tr)
	if err != nil {
		t.Fatalf("PCR extend: %v", err)
	}
}

// TestSameKeyImportedTwice: two blobs of one key share a Name but not an
// auth value; the device must not mistake one loaded blob for the other.
func TestSameKeyImportedTwice(t *testing.T) {
	t.Parallel()
	d, _ := open(t, tpm.Config{})
	ctx := context.Background()
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	var signers []*tpm.Signer
	for range 2 {
		k, err := d.ImportKey(ctx, priv)
		if err != nil {
			t.Fatal(err)
		}
		s, _ := d.Signer(k)
		signers = append(signers, s)
	}
	for range 3 {
		for _, s := range signers {
			if _, err := s.Sign(nil, sha(crypto.SHA256, []byte("x")), crypto.SHA256); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestReadClock(t *testing.T) {
	t.Parallel()
	d, sw := open(t, tpm.Config{})
	ctx := context.Background()
	a, err := d.ReadClock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // not ordering: the TPM's clock counts milliseconds, let it move
	b, err := d.ReadClock(ctx)
	if err != nil || b.Clock <= a.Clock || b.ResetCount != a.ResetCount {
		t.Fatalf("clock %+v then %+v (%v)", a, b, err)
	}
	// A restarted TPM counts a reset.
	sw.Stop()
	sw.Restart()
	c, err := d.ReadClock(ctx)
	if err != nil || c.ResetCount <= b.ResetCount {
		t.Fatalf("after restart: %+v, before %+v (%v)", c, b, err)
	}
}
