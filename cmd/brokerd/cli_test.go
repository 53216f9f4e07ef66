package main

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/brokerd/brokerd/internal/swtpmtest"
	"github.com/brokerd/brokerd/internal/testproc"
)

// brokerdBin is the brokerd binary under test, built as it ships
// (CGO_ENABLED=0, no simulator) by TestMain.
var brokerdBin string

func TestMain(m *testing.M) {
	var err error
	if brokerdBin, err = buildBrokerd("brokerd", []string{"CGO_ENABLED=0"}, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// buildBrokerd builds this package as name, with env and go build flags,
// and returns its path. It builds into a directory of the user's cache
// that belongs to this source tree, where go build relinks only when
// something changed (a link costs seconds, the demo's most); a lock keeps
// two runs of the same tree from building at once.
func buildBrokerd(name string, env, flags []string) (string, error) {
	src, err := os.Getwd()
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(src))
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "brokerd-test", hex.EncodeToString(sum[:8]))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close() // and unlocked
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", err
	}
	bin := filepath.Join(dir, name)
	build := exec.Command("go", append(append([]string{"build", "-o", bin}, flags...), ".")...)
	build.Env = append(os.Environ(), env...)
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s: %v\n%s", name, err, out)
	}
	return bin, nil
}

// cli runs the real brokerdBin with a configuration of its own.
type cli struct {
	t      *testing.T
	dir    string
	config string
	env    []string
	sock   string // the admin socket, once asked for
}

// adminSocket is where the admin socket goes: in a directory with a short
// path (unix socket paths have 108 bytes at most; t.TempDir's hold the
// test's name).
func (c *cli) adminSocket() string {
	if c.sock == "" {
		dir, err := os.MkdirTemp("", "adm")
		if err != nil {
			c.t.Fatal(err)
		}
		c.t.Cleanup(func() { os.RemoveAll(dir) })
		c.sock = filepath.Join(dir, "admin.sock")
	}
	return c.sock
}

type result struct {
	stdout, stderr string
	code           int
}

// newCLI initialises a configuration and state for a fresh swtpm.
func newCLI(t *testing.T) (*cli, *swtpmtest.TPM) {
	t.Helper()
	sw := swtpmtest.Start(t)
	c := &cli{t: t, dir: t.TempDir()}
	c.config = filepath.Join(c.dir, "etc", "brokerd.toml")
	c.must("init", "--dir", filepath.Join(c.dir, "etc"), "--tpm", sw.Address(), "--admin-socket", c.adminSocket())
	return c, sw
}

func (c *cli) run(stdin string, args ...string) result {
	c.t.Helper()
	cmd := exec.Command(brokerdBin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "BROKERD_CONFIG=" + c.config}, c.env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := testproc.Run(cmd)
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatal(err)
	}
	return result{out.String(), errb.String(), code}
}

// must runs a command that has to succeed and returns its standard output.
func (c *cli) must(args ...string) string {
	c.t.Helper()
	r := c.run("", args...)
	if r.code != 0 {
		c.t.Fatalf("brokerd %s: exit %d\n%s", strings.Join(args, " "), r.code, r.stderr)
	}
	return r.stdout
}

// fail runs a command that has to fail with status code and a one-line
// reason containing want.
func (c *cli) fail(code int, want string, args ...string) {
	c.t.Helper()
	r := c.run("", args...)
	if r.code != code {
		c.t.Fatalf("brokerd %s: exit %d, want %d\n%s", strings.Join(args, " "), r.code, code, r.stderr)
	}
	if lines := strings.Count(strings.TrimSpace(r.stderr), "\n"); lines != 0 || !strings.Contains(r.stderr, want) {
		c.t.Fatalf("brokerd %s: stderr %q, want one line containing %q", strings.Join(args, " "), r.stderr, want)
	}
}

func (c *cli) sign(stdin string, args ...string) string {
	c.t.Helper()
	r := c.run(stdin, append([]string{"key", "sign"}, args...)...)
	if r.code != 0 {
		c.t.Fatalf("key sign %v: %s", args, r.stderr)
	}
	return strings.TrimSpace(r.stdout)
}

func openssl(t *testing.T, stdin []byte, args ...string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command("openssl", args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("openssl %s: %v: %s%s", strings.Join(args, " "), err, out, errb.String())
	}
	return out, nil
}

func mustOpenSSL(t *testing.T, stdin []byte, args ...string) []byte {
	t.Helper()
	out, err := openssl(t, stdin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (c *cli) file(name string, data []byte) string {
	p := filepath.Join(c.dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		c.t.Fatal(err)
	}
	return p
}

// rsaPEM is an RSA-2048 key (PKCS #8 PEM) for key import, made once per
// test binary: making one in the TPM (key create) takes a few hundred
// milliseconds of swtpm, importing it a few. Tests that make keys in the
// TPM on purpose still do.
var rsaPEM = sync.OnceValues(func() ([]byte, error) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
})

// importRSA imports rsaPEM as id.
func (c *cli) importRSA(id string) {
	c.t.Helper()
	data, err := rsaPEM()
	if err != nil {
		c.t.Fatal(err)
	}
	c.must("key", "import", "--id", id, "--key", c.file(id+".pem", data))
}

func TestRSASignMatchesOpenSSL(t *testing.T) {
	t.Parallel()
	c, _ := newCLI(t)
	keyFile := filepath.Join(c.dir, "qseal.key")
	mustOpenSSL(t, nil, "genrsa", "-out", keyFile, "2048")
	pubFile := c.file("qseal.pub", mustOpenSSL(t, nil, "rsa", "-in", keyFile, "-pubout"))
	c.must("key", "import", "--id", "qseal.key", "--key", keyFile)

	data := "POST /payments\ndigest: SHA-256=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
	for _, h := range []string{"sha256", "sha512"} {
		want := base64.StdEncoding.EncodeToString(mustOpenSSL(t, []byte(data), "dgst", "-"+h, "-sign", keyFile))
		if got := c.sign(data, "--id", "qseal.key", "--alg", "RS", "--hash", strings.ToUpper(h)); got != want {
			t.Fatalf("RS/%s: brokerd %s\nopenssl %s", h, got, want)
		}
	}
	dataFile := c.file("data", []byte(data))
	for _, tc := range []struct{ hash, salt string }{{"SHA256", "32"}, {"SHA512", "64"}} {
		sig, _ := base64.StdEncoding.DecodeString(c.sign(data, "--id", "qseal.key", "--alg", "PS", "--hash", tc.hash))
		sigFile := c.file("sig", sig)
		verify := func(salt string) error {
			_, err := openssl(t, nil, "dgst", "-"+strings.ToLower(tc.hash), "-verify", pubFile,
				"-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:"+salt, "-signature", sigFile, dataFile)
			return err
		}
		if err := verify(tc.salt); err != nil {
			t.Fatalf("PS/%s with salt %s: %v", tc.hash, tc.salt, err)
		}
		if err := verify("max"); err == nil {
			t.Fatalf("PS/%s verifies with the maximum salt length; want salt = hash length only", tc.hash)
		}
	}
}

func TestExampleKeyVector(t *testing.T) {
	t.Parallel()
	c, _ := newCLI(t)
	want, err := os.ReadFile("../../testdata/reference/example.sig.rs-sha256.b64")
	if err != nil {
		t.Fatal(err)
	}
	out := c.must("key", "import", "--id", "example.key", "--key", "../../testdata/reference/example.key")
	if !strings.Contains(out, "sealed, rsa4096") {
		t.Fatalf("import output %q, want a sealed RSA-4096 key", out)
	}
	if got := c.sign("a string to sign", "--id", "example.key"); got != strings.TrimSpace(string(want)) {
		t.Fatalf("signature\n got %s\nwant %s", got, want)
	}
	// The copy under ../shared, when present, is the same vector.
	if shared, err := os.ReadFile("../../../shared/reference/example.sig.rs-sha256.b64"); err != nil {
		t.Logf("../shared is absent, checked testdata/reference only: %v", err)
	} else if !bytes.Equal(bytes.TrimSpace(shared), bytes.TrimSpace(want)) {
		t.Fatal("testdata/reference differs from ../shared/reference")
	}
}

func TestEncryptedKeyPasswords(t *testing.T) {
	t.Parallel()
	c, _ := newCLI(t)
	keyFile := filepath.Join(c.dir, "qwac.key")
	mustOpenSSL(t, nil, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-aes-256-cbc", "-pass", "pass:s3cret", "-out", keyFile)
	legacyFile := filepath.Join(c.dir, "legacy.key")
	mustOpenSSL(t, nil, "genrsa", "-aes256", "-traditional", "-passout", "pass:s3cret", "-out", legacyFile, "2048")
	if pem, _ := os.ReadFile(legacyFile); !bytes.Contains(pem, []byte("Proc-Type: 4,ENCRYPTED")) {
		t.Fatal("openssl did not write a legacy encrypted key")
	}

	c.fail(1, "password", "key", "import", "--id", "qwac.key", "--key", keyFile)
	c.fail(1, "wrong or missing password", "key", "import", "--id", "qwac.key", "--key", keyFile, "--password-file", c.file("bad", []byte("nope\n")))
	c.env = []string{"QWAC_KEY_PASSWORD=wrong"}
	c.fail(1, "wrong or missing password", "key", "import", "--id", "qwac.key", "--key", keyFile)
	if out := c.must("key", "list", "--json"); strings.TrimSpace(out) != "[]" {
		t.Fatalf("failed imports stored keys: %s", out)
	}

	c.env = []string{"QWAC_KEY_PASSWORD=s3cret"}
	c.must("key", "import", "--id", "qwac.key", "--key", keyFile)
	c.env = nil
	c.must("key", "import", "--id", "legacy", "--key", legacyFile, "--password-file", c.file("pw", []byte("s3cret\n")))
	var infos []map[string]any
	json.Unmarshal([]byte(c.must("key", "list", "--json")), &infos)
	if len(infos) != 2 || infos[0]["kind"] != "imported" || infos[1]["algorithm"] != "p256" {
		t.Fatalf("key list: %v", infos)
	}
	// Neither key is on disk in the clear.
	clearKey := mustOpenSSL(t, nil, "pkey", "-in", keyFile, "-passin", "pass:s3cret", "-outform", "DER")
	clearLegacy := mustOpenSSL(t, nil, "pkey", "-in", legacyFile, "-passin", "pass:s3cret", "-outform", "DER")
	scanDir(t, c.dir, map[string][]byte{"P-256 key": clearKey, "RSA key": clearLegacy},
		filepath.Join(c.dir, "qwac.key"), filepath.Join(c.dir, "legacy.key"))
}

// scanDir fails if any file under dir, except the given ones, contains a
// needle or its base64 form.
func scanDir(t *testing.T, dir string, needles map[string][]byte, except ...string) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		for _, e := range except {
			if p == e {
				return nil
			}
		}
		data, _ := os.ReadFile(p)
		for what, n := range needles {
			b64 := base64.StdEncoding.EncodeToString(n)
			if bytes.Contains(data, n) || bytes.Contains(data, []byte(b64[8:72])) {
				t.Errorf("%s contains the %s", p, what)
			}
		}
		return nil
	})
}

func TestEKWrappedKey(t *testing.T) {
	t.Parallel()
	appliance, _ := newCLI(t)
	other, _ := newCLI(t)
	ek := filepath.Join(appliance.dir, "ek.pem")
	appliance.must("tpm", "ek", "--out", ek)

	// The workstation has no TPM and no configuration.
	ws := &cli{t: t, dir: t.TempDir(), config: "/nonexistent/brokerd.toml"}
	keyFile := filepath.Join(ws.dir, "qwac.key")
	mustOpenSSL(t, nil, "genrsa", "-out", keyFile, "2048")
	pubFile := ws.file("qwac.pub", mustOpenSSL(t, nil, "rsa", "-in", keyFile, "-pubout"))
	blob := filepath.Join(ws.dir, "qwac.blob")
	ws.must("key", "wrap", "--ek", ek, "--key", keyFile, "--out", blob)
	blobData, _ := os.ReadFile(blob)
	clearDER := mustOpenSSL(t, nil, "rsa", "-in", keyFile, "-outform", "DER")
	scanDir(t, filepath.Dir(blob), map[string][]byte{"key": clearDER}, keyFile)
	if bytes.Contains(blobData, clearDER) {
		t.Fatal("the wrapped blob contains the clear key")
	}

	out := appliance.must("key", "import", "--id", "qwac.key", "--blob", blob)
	if !strings.Contains(out, "ek-wrapped, rsa2048") {
		t.Fatalf("import: %q", out)
	}
	sig, _ := base64.StdEncoding.DecodeString(appliance.sign("data", "--id", "qwac.key", "--alg", "PS", "--hash", "SHA512"))
	if _, err := openssl(t, nil, "dgst", "-sha512", "-verify", pubFile, "-sigopt", "rsa_padding_mode:pss",
		"-sigopt", "rsa_pss_saltlen:64", "-signature", appliance.file("sig", sig), appliance.file("data", []byte("data"))); err != nil {
		t.Fatalf("PS512 with the EK-wrapped key: %v", err)
	}
	other.fail(1, "different TPM", "key", "import", "--id", "qwac.key", "--blob", blob)
	if out := other.must("key", "list"); strings.Contains(out, "qwac.key") {
		t.Fatal("the refused blob was stored")
	}
}

func TestKeyLifecycle(t *testing.T) {
	t.Parallel()
	c, _ := newCLI(t)
	csrFile := filepath.Join(c.dir, "qwac.csr")
	c.must("key", "create", "--id", "qwac.key", "--alg", "p256", "--subject", "/C=FI/O=Example Oy/organizationIdentifier=PSDFI-FINFSA-29884997/CN=tpp.example", "--csr-out", csrFile)
	subject := mustOpenSSL(t, nil, "req", "-in", csrFile, "-noout", "-verify", "-subject", "-nameopt", "RFC2253")
	if !strings.Contains(string(subject), "CN=tpp.example,organizationIdentifier=PSDFI-FINFSA-29884997,O=Example Oy,C=FI") {
		t.Fatalf("CSR subject: %s", subject)
	}
	// A QTSP issues the certificate from the CSR.
	caKey := filepath.Join(c.dir, "ca.key")
	caCert := filepath.Join(c.dir, "ca.crt")
	mustOpenSSL(t, nil, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", caKey, "-out", caCert, "-subj", "/CN=Test QTSP", "-days", "30")
	leaf := filepath.Join(c.dir, "qwac.crt")
	mustOpenSSL(t, nil, "x509", "-req", "-in", csrFile, "-CA", caCert, "-CAkey", caKey, "-set_serial", "7", "-days", "20", "-out", leaf)
	otherCert := filepath.Join(c.dir, "other.crt")
	mustOpenSSL(t, nil, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", filepath.Join(c.dir, "o.key"), "-out", otherCert, "-subj", "/CN=other", "-days", "1")

	c.fail(1, "does not match the key", "key", "cert", "--id", "qwac.key", "--cert", otherCert)
	c.must("key", "cert", "--id", "qwac.key", "--cert", leaf, "--chain", caCert)
	var infos []map[string]any
	if err := json.Unmarshal([]byte(c.must("key", "list", "--json")), &infos); err != nil {
		t.Fatal(err)
	}
	der := mustOpenSSL(t, nil, "x509", "-in", leaf, "-outform", "DER")
	thumb := mustOpenSSL(t, der, "dgst", "-sha256", "-binary")
	want := map[string]any{
		"id": "qwac.key", "kind": "tpm", "algorithm": "p256",
		"subject":  "CN=tpp.example,organizationIdentifier=PSDFI-FINFSA-29884997,O=Example Oy,C=FI",
		"x5t#S256": base64.RawURLEncoding.EncodeToString(thumb), "chain_length": 2.0,
		"organization_identifier": "PSDFI-FINFSA-29884997", "sha1_fingerprint": hex.EncodeToString(mustOpenSSL(t, der, "dgst", "-sha1", "-binary")),
	}
	for k, v := range want {
		if infos[0][k] != v {
			t.Errorf("key list %s = %v, want %v", k, infos[0][k], v)
		}
	}
	if infos[0]["not_after"] == nil || fmt.Sprint(infos[0]["aliases"]) != "[qwac.crt]" {
		t.Errorf("key list: %v", infos[0])
	}
	table := c.must("key", "list")
	if !strings.Contains(table, "qwac.key") || !strings.Contains(table, "qwac.crt") {
		t.Errorf("key list table:\n%s", table)
	}
	// The JWS defaults: set, cleared one by one, shown by key list.
	if out := c.must("key", "config", "--id", "qwac.key", "--ob-iss", "org/ssa", "--ob-tan", "openbanking.org.uk"); out != "key qwac.key: jws kid (x5t#S256), ob iss org/ssa, ob tan openbanking.org.uk\n" {
		t.Errorf("key config: %q", out)
	}
	if out := c.must("key", "config", "--id", "qwac.key", "--ob-iss", "", "--jws-kid", "k1"); out != "key qwac.key: jws kid k1, ob iss (certificate subject), ob tan openbanking.org.uk\n" {
		t.Errorf("key config: %q", out)
	}
	if err := json.Unmarshal([]byte(c.must("key", "list", "--json")), &infos); err != nil || fmt.Sprint(infos[0]["jose"]) != "map[kid:k1 ob_tan:openbanking.org.uk]" {
		t.Errorf("key list jose: %v %v", infos[0]["jose"], err)
	}
	c.fail(1, `"qwac.crt" is an alias of "qwac.key"; give the key id`, "key", "config", "--id", "qwac.crt", "--jws-kid", "x")
	c.fail(2, "--id is required", "key", "config", "--ob-tan", "x")
	// Clients of the reference broker name the certificate file.
	if sig := c.sign("x", "--id", "qwac.crt"); len(sig) != 88 {
		t.Errorf("ES signature through the alias: %q (want 64 bytes, base64)", sig)
	}
	c.fail(1, "incompatible", "key", "sign", "--id", "qwac.key", "--alg", "RS")
	c.must("key", "delete", "--id", "qwac.key")
	c.fail(1, "unknown key", "key", "sign", "--id", "qwac.crt")
}

func TestConfigCheckAndUsage(t *testing.T) {
	t.Parallel()
	c, sw := newCLI(t)
	c.must("key", "create", "--id", "k", "--alg", "rsa2048")
	out := c.must("config", "check")
	if !strings.Contains(out, "key k (tpm, rsa2048, purpose any): ok") {
		t.Fatalf("config check:\n%s", out)
	}
	// init refuses to overwrite.
	c.fail(1, "refusing to overwrite", "init", "--dir", filepath.Dir(c.config), "--tpm", sw.Address())

	bad := &cli{t: t, dir: t.TempDir()}
	bad.config = bad.file("brokerd.toml", []byte("state_dir = \"s\"\nport = 1\n[tpm]\nqueue_depth = -1\n"))
	r := bad.run("", "config", "check")
	if r.code != 1 || !strings.Contains(r.stdout, "problem: port: unknown key\n") || !strings.Contains(r.stdout, "problem: tpm.queue_depth: -1 out of range") ||
		r.stderr != "brokerd config check: 2 problems found\n" {
		t.Fatalf("config check of an unknown key: %d %q %q", r.code, r.stdout, r.stderr)
	}
	bad.config = bad.file("brokerd.toml", []byte("state_dir = \"s\"\n[tpm]\nqueue_depth = -1\naddress = \"nope\"\n"))
	r = bad.run("", "config", "check")
	if r.code != 1 || !strings.Contains(r.stdout, "tpm.address") || !strings.Contains(r.stdout, "tpm.queue_depth") {
		t.Fatalf("config check names every problem: %d %q", r.code, r.stdout)
	}

	c.fail(2, "--id is required", "key", "sign")
	c.fail(2, "want RS, PS or ES", "key", "sign", "--id", "k", "--alg", "XS")
	c.fail(2, "unknown command", "frobnicate")
	c.fail(2, "give exactly one of --key and --blob", "key", "import", "--id", "x")
	if r := c.run("", "key", "create", "--help"); r.code != 0 || !strings.Contains(r.stdout, "--alg") {
		t.Fatalf("--help: %d %q", r.code, r.stdout)
	}
	// A group's help lists its commands, and only them.
	for _, args := range [][]string{{"audit", "--help"}, {"audit", "-h"}, {"audit", "help"}} {
		r := c.run("", args...)
		if r.code != 0 || !strings.Contains(r.stdout, "audit verify") || strings.Contains(r.stdout, "key create") {
			t.Fatalf("%v: %d %q", args, r.code, r.stdout)
		}
	}
	if r := c.run("", "key"); r.code != 2 || !strings.Contains(r.stderr, "a subcommand is missing") || !strings.Contains(r.stderr, "key create") {
		t.Fatalf("a group without a command: %d %q", r.code, r.stderr)
	}
}

func TestShippedBinaryHasNoSimulator(t *testing.T) {
	t.Parallel()
	c := &cli{t: t, dir: t.TempDir()}
	c.fail(1, "simulator is not part of this build", "init", "--dir", c.dir, "--tpm", "simulator")
	out, err := exec.Command("go", "version", "-m", brokerdBin).Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, forbidden := range []string{"go-tpm-tools", "CGO_ENABLED=1", "-tags"} {
		if bytes.Contains(out, []byte(forbidden)) {
			t.Errorf("shipped brokerdBin build info mentions %q:\n%s", forbidden, out)
		}
	}
	syms, err := exec.Command("go", "tool", "nm", brokerdBin).Output()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(syms, []byte("simulator.Get")) || bytes.Contains(syms, []byte("ms-tpm-20-ref")) {
		t.Error("shipped brokerdBin contains the TPM simulator")
	}
}
