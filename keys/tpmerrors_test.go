package keys_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/brokerd/brokerd/internal/swtpmtest"
	"github.com/brokerd/brokerd/internal/tpmproxy"
	"github.com/brokerd/brokerd/keys"
	"github.com/brokerd/brokerd/store"
	"github.com/brokerd/brokerd/tpm"
)

// setupChip is setup with a chip played in front of swtpm: answer may
// answer a command in the TPM's place (see tpmproxy.Options.Command).
func setupChip(t *testing.T, answer func(cmd []byte) []byte, opts keys.Options) *env {
	t.Helper()
	sw := swtpmtest.Start(t)
	p, err := tpmproxy.Start(t.TempDir(), sw.Socket(), tpmproxy.Options{Command: answer})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	dev, err := tpm.Open(tpm.Config{Address: "swtpm:" + p.Socket()}, nil)
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
	m, err := keys.Open(dev, st, opts)
	if err != nil {
		t.Fatal(err)
	}
	return &env{dev: dev, st: st, m: m, dir: dir, swtpm: sw}
}

// testParmsAnswer answers TPM2_TestParms for keys of type typ with rc
// while on is set.
func testParmsAnswer(typ tpm2.TPMAlgID, rc uint32, on *atomic.Bool) func([]byte) []byte {
	return func(cmd []byte) []byte {
		if !on.Load() || tpm2.TPMCC(binary.BigEndian.Uint32(cmd[6:10])) != tpm2.TPMCCTestParms ||
			tpm2.TPMAlgID(binary.BigEndian.Uint16(cmd[10:12])) != typ {
			return nil
		}
		b := binary.BigEndian.AppendUint16(nil, uint16(tpm2.TPMSTNoSessions))
		b = binary.BigEndian.AppendUint32(b, 10)
		return binary.BigEndian.AppendUint32(b, rc)
	}
}

// rcValueParameter1 is TPM_RC_VALUE about the first parameter: TestParms'
// answer for parameters the TPM does not implement.
const rcValueParameter1 = uint32(tpm2.TPMRCValue) + 0x040 + 0x100

// TestImportSealsOnlyWhatTheTPMRefuses: a TPM that cannot tell whether it
// holds RSA-2048 keys (TestParms answers TPM_RC_RETRY) gets no sealed key
// and no record: the import fails, and succeeds in the TPM once it
// answers. One that says it does not hold them (TPM_RC_VALUE) gets the key
// sealed.
func TestImportSealsOnlyWhatTheTPMRefuses(t *testing.T) {
	t.Parallel()
	priv, _ := rsa.GenerateKey(rand.Reader, 2048)
	var unsure atomic.Bool
	unsure.Store(true)
	e := setupChip(t, testParmsAnswer(tpm2.TPMAlgRSA, uint32(tpm2.TPMRCRetry), &unsure), keys.Options{})
	if _, err := e.m.Import(ctx, "k", priv, keys.ImportOptions{}); err == nil || errors.Is(err, keys.ErrUnsupported) {
		t.Fatalf("Import while the TPM cannot tell: %v", err)
	}
	if l, _ := e.m.List(); len(l) != 0 {
		t.Fatalf("a key was stored: %+v", l)
	}
	unsure.Store(false)
	if info, err := e.m.Import(ctx, "k", priv, keys.ImportOptions{}); err != nil || info.Kind != keys.KindImported {
		t.Fatalf("Import once the TPM answers: %+v, %v", info, err)
	}

	var refuses atomic.Bool
	refuses.Store(true)
	e = setupChip(t, testParmsAnswer(tpm2.TPMAlgRSA, rcValueParameter1, &refuses), keys.Options{})
	if info, err := e.m.Import(ctx, "k", priv, keys.ImportOptions{}); err != nil || info.Kind != keys.KindSealed {
		t.Fatalf("Import on a TPM without RSA-2048: %+v, %v", info, err)
	}
}

// TestImportWrappedOfAnAlgorithmTheTPMLacks: a P-384 key wrapped for this
// TPM's EK, on a TPM without P-384, is "unsupported by this TPM", not
// "wrapped for another TPM"; the same key as a PEM file is sealed.
func TestImportWrappedOfAnAlgorithmTheTPMLacks(t *testing.T) {
	t.Parallel()
	var on atomic.Bool
	on.Store(true)
	e := setupChip(t, testParmsAnswer(tpm2.TPMAlgECC, rcValueParameter1, &on), keys.Options{})
	ek, err := e.dev.EndorsementKey(ctx, tpm.ParentRSAEK)
	if err != nil {
		t.Fatal(err)
	}
	priv, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	w, err := tpm.WrapKey(ek, priv)
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.m.ImportWrapped(ctx, "w", w, keys.ImportOptions{})
	if !errors.Is(err, keys.ErrUnsupported) || errors.Is(err, keys.ErrWrongTPM) ||
		!strings.Contains(err.Error(), "unsupported by this TPM") || strings.Contains(err.Error(), "another TPM") {
		t.Fatalf("ImportWrapped(P-384) on a TPM without it: %v", err)
	}
	if info, err := e.m.Import(ctx, "pem", priv, keys.ImportOptions{}); err != nil || info.Kind != keys.KindSealed {
		t.Fatalf("Import(P-384) on a TPM without it: %+v, %v", info, err)
	}
}

// TestSealedToPCRsSaysWhatBreaksIt: a key sealed to PCR 7 carries the
// warning that Secure Boot database updates make it unusable, in the
// import's answer and in the key's description later.
func TestSealedToPCRsSaysWhatBreaksIt(t *testing.T) {
	t.Parallel()
	e := setupChip(t, nil, keys.Options{SealPCRs: []int{7}})
	priv, _ := rsa.GenerateKey(rand.Reader, 4096)
	info, err := e.m.Import(ctx, "big", priv, keys.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Kind != keys.KindSealed || len(info.Warnings) < 2 ||
		!strings.Contains(strings.Join(info.Warnings, "\n"), "PCR 7") || !strings.Contains(strings.Join(info.Warnings, "\n"), "dbx") {
		t.Fatalf("sealed to PCR 7: %s, warnings %q", info.Kind, info.Warnings)
	}
	later, _ := e.m.Info("big")
	if strings.Join(later.Warnings, "\n") != strings.Join(info.Warnings, "\n") {
		t.Fatalf("Info later: %q", later.Warnings)
	}
	small, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if info, err := e.m.Import(ctx, "small", small, keys.ImportOptions{}); err != nil || len(info.Warnings) != 0 {
		t.Fatalf("a key in the TPM: %v, warnings %q", err, info.Warnings)
	}
}

// TestCreateFlushesWhatItDoesNotStore: a create that fails after the TPM
// made the key (the CSR cannot be signed) leaves nothing loaded.
func TestCreateFlushesWhatItDoesNotStore(t *testing.T) {
	t.Parallel()
	e := setup(t)
	before, err := e.dev.CachedObjects(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bad := &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}, SignatureAlgorithm: x509.SHA256WithRSA}
	if _, _, err := e.m.Create(ctx, "k", tpm.P256, keys.CreateOptions{CSR: bad}); err == nil {
		t.Fatal("Create with an RSA CSR for a P-256 key succeeded")
	}
	if after, err := e.dev.CachedObjects(ctx); err != nil || after != before {
		t.Fatalf("cached objects %d before, %d after a failed create (%v)", before, after, err)
	}
	if l, _ := e.m.List(); len(l) != 0 {
		t.Fatalf("a key was stored: %+v", l)
	}
}
