package testpki

import (
	"crypto/rand"
	"crypto/rsa"
	"math/big"
	"testing"
)

// smallPrimes are the primes up to 167: their product is the primorial M
// of the ROCA detector (CVE-2017-15361).
var smallPrimes = []int64{2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67,
	71, 73, 79, 83, 89, 97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167}

// RSALibPrime returns a prime of bits bits built as Infineon's flawed
// RSALib built its RSA primes: k·M + (65537^a mod M), M the product of the
// primes up to 167 (Nemec et al., "The Return of Coppersmith's Attack",
// CCS 2017). Its top two bits are set, so that two of them make a modulus
// of exactly 2·bits bits.
func RSALibPrime(t testing.TB, bits int) *big.Int {
	t.Helper()
	m := big.NewInt(1)
	for _, p := range smallPrimes {
		m.Mul(m, big.NewInt(p))
	}
	// k·M spans [¾·2^bits, 2^bits).
	lo := new(big.Int).Div(new(big.Int).Lsh(big.NewInt(3), uint(bits-2)), m)
	span := new(big.Int).Sub(new(big.Int).Div(new(big.Int).Lsh(big.NewInt(1), uint(bits)), m), lo)
	for range 100000 {
		k, _ := rand.Int(rand.Reader, span)
		a, _ := rand.Int(rand.Reader, m)
		p := new(big.Int).Exp(big.NewInt(65537), a, m)
		p.Add(p, k.Mul(k.Add(k, lo), m))
		if p.BitLen() == bits && p.ProbablyPrime(20) {
			return p
		}
	}
	t.Fatal("testpki: no RSALib-style prime found")
	return nil
}

// RSALibKey returns an RSA key of bits bits (e = 65537) made of two
// RSALib-style primes: a key with the ROCA fingerprint.
func RSALibKey(t testing.TB, bits int) *rsa.PrivateKey {
	t.Helper()
	for {
		p, q := RSALibPrime(t, bits/2), RSALibPrime(t, bits/2)
		key := &rsa.PrivateKey{PublicKey: rsa.PublicKey{N: new(big.Int).Mul(p, q), E: 65537}, Primes: []*big.Int{p, q}}
		phi := new(big.Int).Mul(new(big.Int).Sub(p, big.NewInt(1)), new(big.Int).Sub(q, big.NewInt(1)))
		if key.D = new(big.Int).ModInverse(big.NewInt(65537), phi); key.D == nil || p.Cmp(q) == 0 {
			continue // 65537 divides p-1 or q-1: another pair
		}
		key.Precompute()
		if err := key.Validate(); err != nil {
			t.Fatal(err)
		}
		return key
	}
}
