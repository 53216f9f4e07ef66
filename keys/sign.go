package keys

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"fmt"

	"github.com/brokerd/brokerd/tpm"
)

// SignAlg is a signature algorithm as /sign names it.
type SignAlg string

// Signature algorithms of /sign.
const (
	// RS is RSASSA-PKCS1-v1_5.
	RS SignAlg = "RS"
	// PS is RSASSA-PSS with MGF1 over the same hash and salt = hash length.
	PS SignAlg = "PS"
	// ES is ECDSA, returned as raw r||s, each sized to the curve.
	ES SignAlg = "ES"
)

// ParseSignAlg parses a signature algorithm as the command line and
// crypto_algorithm spell it: RS, PS, ES, or "" (chosen by key type).
func ParseSignAlg(s string) (SignAlg, error) {
	switch a := SignAlg(s); a {
	case "", RS, PS, ES:
		return a, nil
	}
	return "", fmt.Errorf("signature algorithm %q: want RS, PS or ES", s)
}

// ParseHash parses a hash as hash_algorithm spells it: SHA256 or SHA512.
func ParseHash(s string) (crypto.Hash, error) {
	switch s {
	case "SHA256":
		return crypto.SHA256, nil
	case "SHA512":
		return crypto.SHA512, nil
	}
	return 0, fmt.Errorf("hash %q: want SHA256 or SHA512", s)
}

// contextSigner is implemented by tpm.Signer: it lets a request's context
// bound the wait for the TPM.
type contextSigner interface {
	SignContext(ctx context.Context, digest []byte, opts crypto.SignerOpts) ([]byte, error)
}

// Sign signs data (not a digest) with the key named name, as POST /sign
// does: alg "" picks RS for RSA keys and ES for EC keys; h is SHA-256 or
// SHA-512. It returns the raw signature bytes (the API base64-encodes them).
func (m *Manager) Sign(ctx context.Context, name string, data []byte, alg SignAlg, h crypto.Hash) ([]byte, SignAlg, error) {
	if h != crypto.SHA256 && h != crypto.SHA512 {
		return nil, "", fmt.Errorf("keys: sign: hash %v is not supported (want SHA256 or SHA512)", h)
	}
	s, err := m.Signer(ctx, name)
	if err != nil {
		return nil, "", err
	}
	hh := h.New()
	hh.Write(data)
	digest := hh.Sum(nil)
	sig, alg, err := SignDigest(ctx, s, digest, alg, h)
	if err != nil {
		return nil, "", fmt.Errorf("keys: sign with %q: %w", name, err)
	}
	return sig, alg, nil
}

// SignDigest signs digest with s using the /sign algorithm alg ("" = by key
// type).
func SignDigest(ctx context.Context, s crypto.Signer, digest []byte, alg SignAlg, h crypto.Hash) ([]byte, SignAlg, error) {
	var opts crypto.SignerOpts = h
	switch pub := s.Public().(type) {
	case *rsa.PublicKey:
		switch alg {
		case "", RS:
			alg = RS
		case PS:
			opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: h}
		default:
			return nil, "", &IncompatibleError{Alg: alg, KeyType: "RSA"}
		}
		sig, err := sign(ctx, s, digest, opts)
		return sig, alg, err
	case *ecdsa.PublicKey:
		if alg != "" && alg != ES {
			return nil, "", &IncompatibleError{Alg: alg, KeyType: "EC " + pub.Curve.Params().Name}
		}
		der, err := sign(ctx, s, digest, opts)
		if err != nil {
			return nil, "", err
		}
		raw, err := tpm.ECDSARaw(der, (pub.Curve.Params().BitSize+7)/8)
		return raw, ES, err
	default:
		return nil, "", &IncompatibleError{Alg: alg, KeyType: "unknown"}
	}
}

// IncompatibleError says which algorithm did not suit which key type. It
// matches ErrIncompatible.
type IncompatibleError struct {
	Alg     SignAlg
	KeyType string // "RSA", "EC P-256", ...
}

func (e *IncompatibleError) Error() string {
	// "an": every KeyType starts with a vowel sound (RSA, EC, unknown).
	return fmt.Sprintf("%v: %s with an %s key", ErrIncompatible, e.Alg, e.KeyType)
}

// Is makes errors.Is(err, ErrIncompatible) hold.
func (e *IncompatibleError) Is(target error) bool { return target == ErrIncompatible }

func sign(ctx context.Context, s crypto.Signer, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if cs, ok := s.(contextSigner); ok {
		return cs.SignContext(ctx, digest, opts)
	}
	return s.Sign(rand.Reader, digest, opts)
}
