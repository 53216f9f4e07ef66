package tpm_test

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"testing"

	"github.com/brokerd/brokerd/tpm"
)

// TestAlgorithmOf: keys brokerd holds have an algorithm; others are named
// as cryptographers name them, with what is supported.
func TestAlgorithmOf(t *testing.T) {
	t.Parallel()
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024)
	rsa2048, _ := rsa.GenerateKey(rand.Reader, 2048)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	x25519, _ := ecdh.X25519().GenerateKey(rand.Reader)
	for key, want := range map[any]tpm.Algorithm{rsa2048.Public(): tpm.RSA2048, p384.Public(): tpm.P384} {
		if got, err := tpm.AlgorithmOf(key); err != nil || got != want {
			t.Errorf("AlgorithmOf(%s) = %s, %v", tpm.KeyType(key), got, err)
		}
	}
	for _, c := range []struct {
		key  any
		name string
	}{{rsa1024.Public(), "RSA-1024"}, {p224.Public(), "EC P-224"}, {edPub, "Ed25519"}, {x25519.PublicKey(), "X25519"}, {"nonsense", "unknown"}} {
		name := c.name
		_, err := tpm.AlgorithmOf(c.key)
		var ue *tpm.UnsupportedKeyError
		if !errors.As(err, &ue) || ue.Type != name || err.Error() != "unsupported key type "+name+": supported: RSA 2048/3072/4096, P-256/384/521" {
			t.Errorf("AlgorithmOf(%s): %v", name, err)
		}
	}
	if got := tpm.KeyType(p224); got != "EC P-224" {
		t.Errorf("KeyType of a private key: %s", got)
	}
}
