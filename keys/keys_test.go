package keys_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/brokerd/brokerd/internal/swtpmtest"
	"github.com/brokerd/brokerd/internal/testpki"
	"github.com/brokerd/brokerd/keys"
	"github.com/brokerd/brokerd/store"
	"github.com/brokerd/brokerd/tpm"
	"github.com/youmark/pkcs8"
)

type env struct {
	dev   *tpm.Device
	st    *store.Store
	m     *keys.Manager
	dir   string
	swtpm *swtpmtest.TPM
}

func setup(t testing.TB) *env {
	t.Helper()
	sw := swtpmtest.Start(t)
	dev, err := tpm.Open(tpm.Config{Address: sw.Address()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, store.FileName), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	m, err := keys.Open(dev, st, keys.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return &env{dev: dev, st: st, m: m, dir: dir, swtpm: sw}
}

var ctx = context.Background()

const referenceDir = "../testdata/reference"

func TestExampleKeyGoldenVector(t *testing.T) {
	t.Parallel()
	e := setup(t)
	pemData, err := os.ReadFile(filepath.Join(referenceDir, "example.key"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(filepath.Join(referenceDir, "example.sig.rs-sha256.b64"))
	if err != nil {
		t.Fatal(err)
	}
	priv, err := keys.ParsePrivateKeyPEM(pemData, nil)
	if err != nil {
		t.Fatal(err)
	}
	info, err := e.m.Import(ctx, "example.key", priv, keys.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Kind != keys.KindSealed || info.Algorithm != tpm.RSA4096 {
		t.Fatalf("example key stored as %s/%s, want sealed/rsa4096", info.Kind, info.Algorithm)
	}
	check := func(m *keys.Manager) {
		t.Helper()
		sig, alg, err := m.Sign(ctx, "example.key", []byte("a string to sign"), "", crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		if alg != keys.RS {
			t.Fatalf("default algorithm for an RSA key = %s, want RS", alg)
		}
		if got := base64.StdEncoding.EncodeToString(sig); got != strings.TrimSpace(string(want)) {
			t.Fatalf("signature\n got %s\nwant %s", got, want)
		}
	}
	check(e.m)
	// A new manager (as after a restart) unseals the key from the state.
	m2, err := keys.Open(e.dev, e.st, keys.Options{})
	if err != nil {
		t.Fatal(err)
	}
	check(m2)
	scanForKey(t, e.dir, priv, pemData)
}

// scanForKey fails if any file under dir contains the private key's PKCS #8
// DER, its PEM body, or (RSA) its private exponent or first prime.
func scanForKey(t *testing.T, dir string, priv crypto.Signer, pemData []byte) {
	t.Helper()
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	needles := map[string][]byte{"PKCS #8 DER": der}
	if block, _ := pem.Decode(pemData); block != nil {
		body := strings.Split(strings.TrimSpace(string(pemData)), "\n")
		needles["PEM line"] = []byte(body[len(body)/2])
		needles["PEM block bytes"] = block.Bytes
	}
	switch k := priv.(type) {
	case *rsa.PrivateKey:
		needles["RSA prime"] = k.Primes[0].Bytes()
		needles["RSA exponent"] = k.D.Bytes()
	case *ecdsa.PrivateKey:
		d, _ := k.Bytes()
		needles["EC scalar"] = d
	}
	filepath.WalkDir(dir, func(p string, de os.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for what, n := range needles {
			if bytes.Contains(data, n) {
				t.Errorf("%s contains the private key's %s", p, what)
			}
		}
		return nil
	})
}

// keyEncodings returns the same key in every PEM form the importer reads.
func keyEncodings(t *testing.T, priv crypto.Signer, password []byte) map[string][]byte {
	t.Helper()
	out := map[string][]byte{"pkcs8": testpki.KeyPEM(t, priv)}
	switch k := priv.(type) {
	case *rsa.PrivateKey:
		out["pkcs1"] = pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
	case *ecdsa.PrivateKey:
		der, _ := x509.MarshalECPrivateKey(k)
		out["sec1"] = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	}
	enc, err := pkcs8.MarshalPrivateKey(priv, password, nil)
	if err != nil {
		t.Fatal(err)
	}
	out["encrypted pkcs8"] = pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: enc})
	return out
}

func TestImportFormats(t *testing.T) {
	t.Parallel()
	e := setup(t)
	password := []byte("correct horse")
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	n := 0
	for kname, priv := range map[string]crypto.Signer{"rsa": rsaKey, "ec": ecKey} {
		for form, data := range keyEncodings(t, priv, password) {
			t.Run(kname+"/"+form, func(t *testing.T) {
				parsed, err := keys.ParsePrivateKeyPEM(data, func() ([]byte, error) { return password, nil })
				if err != nil {
					t.Fatal(err)
				}
				n++
				id := kname + "-" + strings.ReplaceAll(form, " ", "-")
				info, err := e.m.Import(ctx, id, parsed, keys.ImportOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if info.Kind != keys.KindImported {
					t.Fatalf("kind %s, want imported", info.Kind)
				}
				data := []byte("payload")
				sig, alg, err := e.m.Sign(ctx, id, data, "", crypto.SHA256)
				if err != nil {
					t.Fatal(err)
				}
				digest := sha256.Sum256(data)
				switch k := priv.(type) {
				case *rsa.PrivateKey:
					want, _ := rsa.SignPKCS1v15(nil, k, crypto.SHA256, digest[:])
					if alg != keys.RS || !bytes.Equal(sig, want) {
						t.Fatalf("RS signature (%s) differs from Go's", alg)
					}
				case *ecdsa.PrivateKey:
					r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
					if alg != keys.ES || len(sig) != 64 || !ecdsa.Verify(&k.PublicKey, digest[:], r, s) {
						t.Fatalf("ES signature (%s, %d bytes) does not verify", alg, len(sig))
					}
				}
				scanForKey(t, e.dir, priv, data)
			})
		}
	}
	if infos, _ := e.m.List(); len(infos) != n {
		t.Fatalf("%d keys listed, want %d", len(infos), n)
	}
}

func TestEncryptedKeyWrongOrMissingPassword(t *testing.T) {
	t.Parallel()
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for form, data := range keyEncodings(t, priv, []byte("right")) {
		if !strings.Contains(form, "encrypted") {
			continue
		}
		for name, pw := range map[string]keys.PasswordFunc{
			"wrong":   func() ([]byte, error) { return []byte("wrong"), nil },
			"missing": nil,
			"empty":   func() ([]byte, error) { return nil, nil },
		} {
			if _, err := keys.ParsePrivateKeyPEM(data, pw); !errors.Is(err, keys.ErrPassword) {
				t.Errorf("%s password: %v, want ErrPassword", name, err)
			}
		}
	}
	for _, bad := range []string{"", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"} {
		if _, err := keys.ParsePrivateKeyPEM([]byte(bad), nil); err == nil {
			t.Errorf("ParsePrivateKeyPEM(%q) succeeded", bad)
		}
	}
}

func TestSignSemantics(t *testing.T) {
	t.Parallel()
	e := setup(t)
	if _, _, err := e.m.Create(ctx, "rsa", tpm.RSA2048, keys.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.m.Create(ctx, "ec", tpm.P384, keys.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rsaPub := mustSigner(t, e.m, "rsa").Public().(*rsa.PublicKey)
	ecPub := mustSigner(t, e.m, "ec").Public().(*ecdsa.PublicKey)
	data := []byte("{\"alg\":\"PS256\"}.payload")
	cases := []struct {
		key  string
		alg  keys.SignAlg
		hash crypto.Hash
		want keys.SignAlg
		err  error
	}{
		{"rsa", "", crypto.SHA256, keys.RS, nil},
		{"rsa", keys.PS, crypto.SHA256, keys.PS, nil},
		{"rsa", keys.PS, crypto.SHA512, keys.PS, nil},
		{"rsa", keys.RS, crypto.SHA512, keys.RS, nil},
		{"rsa", keys.ES, crypto.SHA256, "", keys.ErrIncompatible},
		{"ec", "", crypto.SHA256, keys.ES, nil},
		{"ec", keys.ES, crypto.SHA512, keys.ES, nil},
		{"ec", keys.RS, crypto.SHA256, "", keys.ErrIncompatible},
		{"ec", keys.PS, crypto.SHA256, "", keys.ErrIncompatible},
		{"nope", "", crypto.SHA256, "", keys.ErrUnknownKey},
	}
	for _, c := range cases {
		sig, alg, err := e.m.Sign(ctx, c.key, data, c.alg, c.hash)
		if c.err != nil {
			if !errors.Is(err, c.err) {
				t.Errorf("%s %s %v: %v, want %v", c.key, c.alg, c.hash, err, c.err)
			}
			continue
		}
		if err != nil || alg != c.want {
			t.Errorf("%s %s %v: alg %s err %v", c.key, c.alg, c.hash, alg, err)
			continue
		}
		h := c.hash.New()
		h.Write(data)
		digest := h.Sum(nil)
		var ok bool
		switch alg {
		case keys.RS:
			ok = rsa.VerifyPKCS1v15(rsaPub, c.hash, digest, sig) == nil
		case keys.PS:
			ok = rsa.VerifyPSS(rsaPub, c.hash, digest, sig, &rsa.PSSOptions{SaltLength: c.hash.Size()}) == nil
		case keys.ES:
			ok = len(sig) == 96 && ecdsa.Verify(ecPub, digest, new(big.Int).SetBytes(sig[:48]), new(big.Int).SetBytes(sig[48:]))
		}
		if !ok {
			t.Errorf("%s %s %v: signature does not verify", c.key, alg, c.hash)
		}
	}
	if _, _, err := e.m.Sign(ctx, "rsa", data, keys.RS, crypto.SHA1); err == nil {
		t.Error("signed with SHA-1")
	}
}

func mustSigner(t *testing.T, m *keys.Manager, name string) crypto.Signer {
	t.Helper()
	s, err := m.Signer(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestCreateWithCSR(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for _, alg := range []tpm.Algorithm{tpm.RSA2048, tpm.RSA3072, tpm.P256, tpm.P384} {
		subject := pkix.Name{CommonName: "qseal " + string(alg), Organization: []string{"Example Fintech Oy"}, Country: []string{"FI"}}
		info, der, err := e.m.Create(ctx, "k-"+string(alg), alg, keys.CreateOptions{CSR: &x509.CertificateRequest{Subject: subject}})
		if err != nil {
			t.Fatalf("%s: %v", alg, err)
		}
		if info.Kind != keys.KindTPM || info.Algorithm != alg {
			t.Fatalf("%s: stored as %s/%s", alg, info.Kind, info.Algorithm)
		}
		csr, err := x509.ParseCertificateRequest(der)
		if err != nil {
			t.Fatal(err)
		}
		if err := csr.CheckSignature(); err != nil {
			t.Fatalf("%s: CSR signature: %v", alg, err)
		}
		if csr.Subject.String() != subject.String() {
			t.Fatalf("%s: CSR subject %q", alg, csr.Subject)
		}
		if !csr.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(mustSigner(t, e.m, info.ID).Public()) {
			t.Fatalf("%s: CSR public key is not the key's", alg)
		}
	}
	if _, _, err := e.m.Create(ctx, "big", tpm.RSA4096, keys.CreateOptions{}); err == nil {
		t.Fatal("created an RSA-4096 key in a TPM that cannot hold one")
	}
}

func TestCertificatesAndAliases(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ca := testpki.NewCA(t, "Test QTSP")
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := ca.Issue(t, priv.Public(), testpki.Leaf{Subject: pkix.Name{CommonName: "qwac.example"}})
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherLeaf := ca.Issue(t, other.Public(), testpki.Leaf{Subject: pkix.Name{CommonName: "someone else"}})

	if _, err := e.m.Import(ctx, "qwac.key", priv, keys.ImportOptions{Chain: []*x509.Certificate{otherLeaf}}); !errors.Is(err, keys.ErrCertMismatch) {
		t.Fatalf("import with another key's certificate: %v", err)
	}
	if infos, _ := e.m.List(); len(infos) != 0 {
		t.Fatalf("a refused import stored %d keys", len(infos))
	}
	info, err := e.m.Import(ctx, "qwac.key", priv, keys.ImportOptions{Chain: []*x509.Certificate{leaf, ca.Cert}, Aliases: []string{"qwac.crt"}})
	if err != nil {
		t.Fatal(err)
	}
	if info.Subject != "CN=qwac.example" || info.NotAfter == nil || info.X5tS256 != keys.X5tS256(leaf) || info.ChainLen != 2 {
		t.Fatalf("info = %+v", info)
	}
	sum := sha256.Sum256(leaf.Raw)
	if info.X5tS256 != base64.RawURLEncoding.EncodeToString(sum[:]) {
		t.Fatal("x5t#S256 is not base64url(SHA-256(DER))")
	}
	for _, name := range []string{"qwac.crt", "./qwac.key", "qwac.key"} {
		if i, err := e.m.Info(name); err != nil || i.ID != "qwac.key" {
			t.Fatalf("Info(%q) = %+v, %v", name, i, err)
		}
	}
	for _, name := range []string{"../qwac.key", "/qwac.key", "QWAC.KEY"} {
		if _, err := e.m.Info(name); !errors.Is(err, keys.ErrUnknownKey) {
			t.Fatalf("Info(%q): %v, want ErrUnknownKey", name, err)
		}
	}
	// A chain out of order is refused.
	if _, err := e.m.AttachCert("qwac.key", []*x509.Certificate{ca.Cert, leaf}, nil); err == nil {
		t.Fatal("attached a chain that starts with the CA")
	}
	if _, err := e.m.AttachCert("qwac.key", []*x509.Certificate{otherLeaf}, nil); !errors.Is(err, keys.ErrCertMismatch) {
		t.Fatalf("attach mismatching certificate: %v", err)
	}
	if _, err := e.m.AttachCert("qwac.crt", []*x509.Certificate{leaf}, nil); err == nil {
		t.Fatal("attached through an alias")
	}
	info, err = e.m.AttachCert("qwac.key", []*x509.Certificate{leaf}, []string{"bank-a.crt"})
	if err != nil || info.ChainLen != 1 || len(info.Aliases) != 2 {
		t.Fatalf("attach: %+v, %v", info, err)
	}
	chain, err := e.m.Chain("bank-a.crt")
	if err != nil || len(chain) != 1 || !chain[0].Equal(leaf) {
		t.Fatalf("Chain = %v, %v", chain, err)
	}
	// Names are unique across ids and aliases.
	if _, _, err := e.m.Create(ctx, "qwac.crt", tpm.P256, keys.CreateOptions{}); !errors.Is(err, keys.ErrExists) {
		t.Fatalf("create under a taken alias: %v", err)
	}
	for _, bad := range []string{"", "a b", "a\nb", "..", string(make([]byte, 256))} {
		if _, _, err := e.m.Create(ctx, bad, tpm.P256, keys.CreateOptions{}); !errors.Is(err, keys.ErrInvalidName) {
			t.Errorf("Create(%q): %v, want ErrInvalidName", bad, err)
		}
	}
	if err := e.m.Delete(ctx, "qwac.crt"); err == nil {
		t.Fatal("deleted through an alias")
	}
	if err := e.m.Delete(ctx, "qwac.key"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.m.Sign(ctx, "qwac.crt", []byte("x"), "", crypto.SHA256); !errors.Is(err, keys.ErrUnknownKey) {
		t.Fatalf("sign after delete: %v", err)
	}
}

func TestStateBoundToItsTPM(t *testing.T) {
	t.Parallel()
	e := setup(t)
	if _, _, err := e.m.Create(ctx, "k", tpm.P256, keys.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	other := swtpmtest.Start(t)
	dev2, err := tpm.Open(tpm.Config{Address: other.Address()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dev2.Close()
	_, err = keys.Open(dev2, e.st, keys.Options{})
	if !errors.Is(err, tpm.ErrWrongTPM) || !strings.Contains(err.Error(), "another TPM") {
		t.Fatalf("open state with another TPM: %v", err)
	}
}

func TestPasswordEnv(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"qwac.key":             "QWAC_KEY_PASSWORD",
		"/etc/x/qseal-2.key":   "QSEAL_2_KEY_PASSWORD",
		"certs/bank.a.key.pem": "BANK_A_KEY_PEM_PASSWORD",
	} {
		if got := keys.PasswordEnv(in); got != want {
			t.Errorf("PasswordEnv(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestP521IsSealed: swtpm holds P-521 keys (TPM2_TestParms says so) but no
// TPM hash gives a 521-bit digest, so a P-521 key is sealed and signs in
// memory: ES with SHA-512, 132 bytes, verifying with Go's ECDSA.
func TestP521IsSealed(t *testing.T) {
	t.Parallel()
	e := setup(t)
	priv, err := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if e.dev.Supports(tpm.P521) {
		t.Error("the TPM is said to sign with P-521 keys")
	}
	info, err := e.m.Import(ctx, "p521.key", priv, keys.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Kind != keys.KindSealed || info.Algorithm != tpm.P521 {
		t.Fatalf("stored as %s/%s, want sealed/p521", info.Kind, info.Algorithm)
	}
	data := []byte("payload")
	sig, alg, err := e.m.Sign(ctx, "p521.key", data, "", crypto.SHA512)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha512.Sum512(data)
	r, s := new(big.Int).SetBytes(sig[:66]), new(big.Int).SetBytes(sig[66:])
	if alg != keys.ES || len(sig) != 132 || !ecdsa.Verify(&priv.PublicKey, digest[:], r, s) {
		t.Fatalf("ES signature (%s, %d bytes) does not verify", alg, len(sig))
	}
	scanForKey(t, e.dir, priv, data)
}
