package tpm

import (
	"crypto/rsa"
	"errors"
	"fmt"
	"math/big"
	"sync"
)

// ROCA (CVE-2017-15361). Infineon's RSALib, in the firmware of many
// Infineon TPMs (and smart cards) made from 2012 to 2017, built each RSA
// prime as p = k·M + (65537^a mod M), with M a primorial (the product of
// the first n primes; n grows with the key size, and every such M is a
// multiple of the primes up to 167). An RSA-2048 key made that way can be
// factored from its public key in days of CPU time: Nemec, Sys, Svenda,
// Klinec and Matyas, "The Return of Coppersmith's Attack: Practical
// Factorization of Widely Used RSA Moduli", ACM CCS 2017.
//
// The paper's fingerprint follows from the structure: a modulus n = p·q of
// such primes is, modulo the primorial M of the primes up to 167, a power
// of 65537 (65537^a · 65537^b). A random modulus is one with probability
// about 2^-154. The test below decides exactly that: whether n mod M has a
// discrete logarithm to the base 65537, computed prime by prime (Pohlig-
// Hellman in small groups) and joined by the Chinese remainder theorem.
// It is the authors' "discrete logarithm" detector (crocs-muni/roca,
// DlogFprint), written anew here; it is stricter than testing each prime
// on its own, which also marks moduli whose residues are powers of 65537
// prime by prime with no single common exponent.

// ErrROCA is returned for an RSA key with the ROCA fingerprint: its private
// key can be computed from its public key.
var ErrROCA = errors.New("RSA key has the ROCA fingerprint (CVE-2017-15361): its private key can be computed from its public key; " +
	"the TPM's firmware has Infineon's RSALib bug: update the TPM firmware, and until then use P-256/P-384 keys " +
	"or RSA keys made elsewhere (brokerd key import, brokerd key wrap)")

// rocaGenerator is the base of RSALib's primes.
const rocaGenerator = 65537

// rocaPrimes are the primes up to 167: the primorial M of the detector.
var rocaPrimes = []int64{2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67,
	71, 73, 79, 83, 89, 97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167}

// rocaGroup is the subgroup that 65537 generates modulo one small prime p:
// its order and the discrete logarithm of each of its elements.
type rocaGroup struct {
	p     int64
	order int64
	log   map[int64]int64 // g^k mod p → k, for 0 ≤ k < order
}

var rocaGroups = sync.OnceValue(func() []rocaGroup {
	groups := make([]rocaGroup, len(rocaPrimes))
	for i, p := range rocaPrimes {
		g := rocaGenerator % p
		grp := rocaGroup{p: p, log: map[int64]int64{}}
		for k, x := int64(0), int64(1); ; k++ {
			if _, seen := grp.log[x]; seen {
				grp.order = k
				break
			}
			grp.log[x] = k
			x = x * g % p
		}
		groups[i] = grp
	}
	return groups
})

// ROCAFingerprint reports whether the RSA modulus n has the ROCA
// fingerprint: n mod M (M the product of the primes up to 167) is a power
// of 65537. Every modulus Infineon's RSALib made has it; others have it
// with negligible probability.
func ROCAFingerprint(n *big.Int) bool {
	if n == nil || n.Sign() <= 0 {
		return false
	}
	// The exponent k with 65537^k ≡ n (mod M) must satisfy, for every
	// prime p, k ≡ log_p(n mod p) (mod ord_p). Those congruences are
	// joined prime power by prime power of the orders: for a prime q, the
	// one with the highest power of q decides, and the others must agree
	// with it modulo their own power of q.
	type congruence struct{ rem, mod int64 } // k ≡ rem (mod mod), mod a power of q
	joined := map[int64]congruence{}
	var r big.Int
	for _, grp := range rocaGroups() {
		k, ok := grp.log[r.Mod(n, big.NewInt(grp.p)).Int64()]
		if !ok {
			return false // not even in the subgroup modulo p
		}
		for q, qe := range primePowers(grp.order) {
			c := congruence{rem: k % qe, mod: qe}
			have, ok := joined[q]
			if !ok {
				joined[q] = c
				continue
			}
			small := min(have.mod, c.mod)
			if have.rem%small != c.rem%small {
				return false // no exponent fits both primes
			}
			if c.mod > have.mod {
				joined[q] = c
			}
		}
	}
	return true
}

// primePowers factors n (small) into prime powers: q → q^e.
func primePowers(n int64) map[int64]int64 {
	out := map[int64]int64{}
	for q := int64(2); n > 1; q++ {
		for n%q == 0 {
			if out[q] == 0 {
				out[q] = 1
			}
			out[q] *= q
			n /= q
		}
	}
	return out
}

// rocaCheck refuses an RSA public key with the ROCA fingerprint. The
// device's hook, set by tests only, stands in for the fingerprint test.
func (d *Device) rocaCheck(what string, pub any) error {
	k, ok := pub.(*rsa.PublicKey)
	if !ok {
		return nil
	}
	vulnerable := ROCAFingerprint
	if d.rocaHook != nil {
		vulnerable = d.rocaHook
	}
	if vulnerable(k.N) {
		return fmt.Errorf("%s: %w", what, ErrROCA)
	}
	return nil
}
