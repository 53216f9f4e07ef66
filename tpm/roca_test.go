package tpm_test

import (
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"math/big"
	"testing"

	"github.com/brokerd/brokerd/internal/testpki"
	"github.com/brokerd/brokerd/tpm"
)

// The ROCA authors' public test vectors, crocs-muni/roca on GitHub:
// roca/tests/data/mod03.txt (a fingerprinted RSA-2048 modulus, listed in
// positive_samples of roca/tests/test_fingerprint.py) and mod04.txt (a
// clean one), both at commit 919aa1e89ec2a527127c79890acb27618c7b9537.
const (
	rocaMod03 = "9dcd7420e420c270a68060eb8b5aa7457a9f6648f86fafed2775cc1f79ae962f1e63f1b9e51c55f9ea6fdc7332e9b0058c9ff2eb1fc89855029cf6aafe21e689" +
		"feb38ac9ffb12f1ce371bb5d0e9aae64161abce74b4244bf68f1edb4411f756a097c8929c14740245ea355f8332d1aa36bb50c7dcb4505da8de02e4e53d38f8d" +
		"f06097da7524df0df93db48eac8cc4af2d3a16257eb2b2adca6ba464e5974fa92550d31b1babf161e7692d00b86e3dd886ecab4abfbe1a8f8cc263ff4af55cdb" +
		"45f4249a5193925f5e983d762f0b6800943eb0267b08f42ed311ce1f5c86eacbc8ce4d3cb7a2fee1ef5641423a1cf4114e5ecf50034a60a412523af9e6f4aa11"
	rocaMod04 = "af659676197f1db06da7ac111a0a0ec175b8b7ef07192ffcd1f6b854c327785f1a7fd3db7da45cd4a31b2b2e5ce0d823a68e28c8adf1747316becce1fe576806" +
		"4039ad2062260c8d1a34e0586dce9bc13090fcc9fb8b8b2c08ed3ae8d61b29818a669689a7d9c1dab053b557fb8d3f9c44faad3e18c55e739b00d3c9126558bc" +
		"8e980cd2af377126ef5b1374136774b8bd370e3c1c149db395c8f99696b628b105946fea20106fe24d103ac062661a9248e8c3f628e00b308d33953aabe55513" +
		"2e218e74ef4b578716b4fe7cf340e8e604a319bf6e9951e1942601d34291032db54999d09e5d036dde3544ad35256bbb97d5e3fffd38166c21eae9199548853b"
)

// rocaFakes are from test_fake_mods in roca/tests/test_fingerprint.py
// (crocs-muni/roca, commit 3e84b1ff52a794f2dc60adadb9c3d317a9e00c46):
// moduli whose residue modulo every small prime is a power of 65537, but
// with no common exponent. The authors' older per-prime detector marks
// them; the discrete-logarithm detector must not.
var rocaFakes = []string{
	"72414128973967872688332736535017614208620368242015797102796086827882754006260204061799547004983731426777596445658889886861027045033760014948048067467947960318205453778973975867532910489227970143091184725760290172935872752222320334100097730483600892686353719855397381316384244147860260153198611313067061116317",
	"138345973265163614694352477004469191286459111070564516299381495188624946671065451924677704628892476011773201612117597303315530745738015579159106259811204610647347662150159814774894784524366138220226431598991937057442020694466365850170057813627445465881816985939192840583168136876337135351417253708364245923133",
	"127791896675045040395064468573109425010219774613093240038326469106056928318395608480165676859635771156871330139281596703754063207095456065784747740162970184880536590144647003492364759169502217854388165521994268206346785403332622195574508223431200064645819724980706217912475871209058082764033948277691466089251",
}

func bigFrom(t *testing.T, s string, base int) *big.Int {
	t.Helper()
	n, ok := new(big.Int).SetString(s, base)
	if !ok {
		t.Fatalf("bad test number %q", s)
	}
	return n
}

func TestROCAFingerprint(t *testing.T) {
	t.Run("published vulnerable modulus", func(t *testing.T) {
		if !tpm.ROCAFingerprint(bigFrom(t, rocaMod03, 16)) {
			t.Error("mod03 of the ROCA test vectors is not detected")
		}
	})
	t.Run("published clean modulus", func(t *testing.T) {
		if tpm.ROCAFingerprint(bigFrom(t, rocaMod04, 16)) {
			t.Error("mod04 of the ROCA test vectors is detected")
		}
	})
	t.Run("RSALib structure", func(t *testing.T) {
		n := testpki.RSALibKey(t, 2048).N
		if !tpm.ROCAFingerprint(n) {
			t.Errorf("a modulus of primes 65537^a mod M + k·M is not detected: %x", n)
		}
	})
	t.Run("keys made by Go", func(t *testing.T) {
		for _, bits := range []int{2048, 3072} {
			k, err := rsa.GenerateKey(rand.Reader, bits)
			if err != nil {
				t.Fatal(err)
			}
			if tpm.ROCAFingerprint(k.N) {
				t.Errorf("a random RSA-%d modulus is detected", bits)
			}
		}
	})
	t.Run("residues agree prime by prime only", func(t *testing.T) {
		for i, s := range rocaFakes {
			n := bigFrom(t, s, 10)
			if !eachResidueAPower(n) {
				t.Fatalf("fake %d: not a per-prime positive; the vector tests nothing", i)
			}
			if tpm.ROCAFingerprint(n) {
				t.Errorf("fake %d is detected: the exponents of the primes are not joined", i)
			}
		}
	})
	t.Run("degenerate input", func(t *testing.T) {
		for _, n := range []*big.Int{nil, big.NewInt(0), big.NewInt(-65537), big.NewInt(2 * 3 * 5)} {
			if tpm.ROCAFingerprint(n) {
				t.Errorf("%v is detected", n)
			}
		}
	})
}

// eachResidueAPower is the older, weaker test: n mod p is a power of
// 65537 modulo each prime p up to 167, each with its own exponent.
func eachResidueAPower(n *big.Int) bool {
	for p := int64(2); p <= 167; p++ {
		if !big.NewInt(p).ProbablyPrime(1) {
			continue
		}
		pp := big.NewInt(p)
		want := new(big.Int).Mod(n, pp)
		x, g, found := big.NewInt(1), big.NewInt(65537%p), false
		for range p {
			if x.Cmp(want) == 0 {
				found = true
				break
			}
			x.Mod(x.Mul(x, g), pp)
		}
		if !found {
			return false
		}
	}
	return true
}

// TestWrapRefusesROCAEndorsementKey: a blob wrapped for an RSA EK with
// the ROCA fingerprint is readable by whoever factors the EK: no wrap.
func TestWrapRefusesROCAEndorsementKey(t *testing.T) {
	n := testpki.RSALibKey(t, 2048).N
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tpm.WrapKey(&rsa.PublicKey{N: n, E: 65537}, priv); !errors.Is(err, tpm.ErrROCA) {
		t.Fatalf("WrapKey for a ROCA EK: %v, want ErrROCA", err)
	}
	if _, err := tpm.WrapKey(&priv.PublicKey, priv); err != nil {
		t.Fatalf("WrapKey for a clean RSA-2048 key as EK: %v", err)
	}
}
