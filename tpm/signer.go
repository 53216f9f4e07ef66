package tpm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"math/big"

	"github.com/google/go-tpm/tpm2"
	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"
)

// Signer signs with a TPM key through the device queue. It implements
// crypto.Signer (for x509 and crypto/tls) and signs RSA PKCS #1 v1.5, RSA-PSS
// and ECDSA with SHA-1 (TLS 1.2 only), SHA-256, SHA-384 and SHA-512. Every
// signature is verified against the public key before it is returned, so a
// faulty TPM cannot hand out a bad RSA signature (which could leak the key).
//
// Signatures wait for the TPM in a priority class (see Class): SignContext
// in the class its context carries, Sign (which crypto/tls and crypto/x509
// call without a context) in the signer's own class, ClassAPI unless fixed
// with WithClass.
type Signer struct {
	d     *Device
	k     *Key
	class Class // for contexts that carry no class
}

var _ crypto.Signer = (*Signer)(nil)

// Signer returns a signer for k on this device.
func (d *Device) Signer(k *Key) (*Signer, error) {
	if k.public == nil {
		return nil, fmt.Errorf("tpm: key %s is not a signing key", k)
	}
	return &Signer{d: d, k: k}, nil
}

// WithClass returns a signer for the same key whose operations wait in
// class c when their context carries no class: Sign always, SignContext
// unless its context says otherwise (WithClass on the context wins). s is
// unchanged. For instance, the API server's TLS key goes to crypto/tls as
// s.WithClass(ClassHandshake). An invalid class means ClassAPI.
func (s *Signer) WithClass(c Class) *Signer {
	if !c.valid() {
		c = ClassAPI
	}
	return &Signer{d: s.d, k: s.k, class: c}
}

// Class returns the class of the signer's operations whose context
// carries none.
func (s *Signer) Class() Class { return s.class }

// SignerWithClass returns s with its context-free operations in class c
// when s is a *Signer (see Signer.WithClass), and s itself otherwise: a
// key held in memory does not use the TPM. It suits a crypto.Signer from a
// key registry, e.g. the API server's key handed to crypto/tls.
func SignerWithClass(s crypto.Signer, c Class) crypto.Signer {
	if ts, ok := s.(*Signer); ok {
		return ts.WithClass(c)
	}
	return s
}

// Public returns the key's public key.
func (s *Signer) Public() crypto.PublicKey { return s.k.public }

// Sign signs digest as crypto.Signer requires: PKCS #1 v1.5 unless opts is
// *rsa.PSSOptions; ECDSA signatures are ASN.1 DER. rand is unused: the
// TPM and crypto/rand supply randomness.
func (s *Signer) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return s.SignContext(context.Background(), digest, opts)
}

// SignContext is Sign with a context that bounds the wait for the TPM and
// may carry its priority class (WithClass); without one, the signature
// waits in the signer's class.
func (s *Signer) SignContext(ctx context.Context, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	h := opts.HashFunc()
	alg, err := hashAlg(h)
	if err != nil {
		return nil, fmt.Errorf("tpm: sign with %s: %w", s.k, err)
	}
	if len(digest) != h.Size() {
		return nil, fmt.Errorf("tpm: sign with %s: digest is %d bytes, want %d for %v", s.k, len(digest), h.Size(), h)
	}
	switch pub := s.k.public.(type) {
	case *rsa.PublicKey:
		return s.signRSA(ctx, pub, digest, opts)
	case *ecdsa.PublicKey:
		return s.signECDSA(ctx, digest, alg)
	}
	return nil, fmt.Errorf("tpm: sign with %s: unsupported key type %T", s.k, s.k.public)
}

func (s *Signer) signRSA(ctx context.Context, pub *rsa.PublicKey, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	h := opts.HashFunc()
	k := pub.Size()
	var (
		em  []byte
		err error
	)
	pss, isPSS := opts.(*rsa.PSSOptions)
	if isPSS {
		saltLen := pss.SaltLength
		if saltLen == rsa.PSSSaltLengthAuto || saltLen == rsa.PSSSaltLengthEqualsHash {
			saltLen = h.Size()
		}
		em, err = emsaPSS(h, digest, saltLen, pub.N.BitLen(), k)
	} else {
		em, err = emsaPKCS1v15(h, digest, k)
	}
	if err != nil {
		return nil, fmt.Errorf("tpm: sign with %s: %w", s.k, err)
	}
	var sig []byte
	err = s.d.doAs(ctx, s.class, func() error {
		o, err := s.d.load(s.k)
		if err != nil {
			return err
		}
		sig, err = s.d.rsaDecrypt(o, s.k.blob.Auth, em)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("tpm: sign with %s: %w", s.k, err)
	}
	if len(sig) < k {
		sig = append(make([]byte, k-len(sig)), sig...)
	}
	if isPSS {
		err = rsa.VerifyPSS(pub, h, digest, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto})
	} else {
		err = rsa.VerifyPKCS1v15(pub, h, digest, sig)
	}
	if err != nil {
		return nil, fmt.Errorf("tpm: sign with %s: the TPM returned a signature that does not verify", s.k)
	}
	return sig, nil
}

func (s *Signer) signECDSA(ctx context.Context, digest []byte, alg tpm2.TPMIAlgHash) ([]byte, error) {
	var r, sv []byte
	err := s.d.doAs(ctx, s.class, func() error {
		o, err := s.d.load(s.k)
		if err != nil {
			return err
		}
		r, sv, err = s.d.ecdsaSign(o, s.k.blob.Auth, digest, alg)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("tpm: sign with %s: %w", s.k, err)
	}
	der, err := ecdsaDER(r, sv)
	if err != nil {
		return nil, fmt.Errorf("tpm: sign with %s: %w", s.k, err)
	}
	return der, nil
}

// ecdsaDER encodes r and s as an ASN.1 ECDSA-Sig-Value.
func ecdsaDER(r, s []byte) ([]byte, error) {
	var b cryptobyte.Builder
	b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1BigInt(new(big.Int).SetBytes(r))
		b.AddASN1BigInt(new(big.Int).SetBytes(s))
	})
	return b.Bytes()
}

// ECDSARaw converts an ASN.1 DER ECDSA signature to r||s, each left-padded
// to size bytes (the JWS and /sign "ES" form).
func ECDSARaw(der []byte, size int) ([]byte, error) {
	var (
		inner        cryptobyte.String
		r, s         = new(big.Int), new(big.Int)
		input        = cryptobyte.String(der)
		errMalformed = errors.New("malformed ECDSA signature")
	)
	if !input.ReadASN1(&inner, asn1.SEQUENCE) || !input.Empty() ||
		!inner.ReadASN1Integer(r) || !inner.ReadASN1Integer(s) || !inner.Empty() {
		return nil, errMalformed
	}
	if r.Sign() <= 0 || s.Sign() <= 0 || len(r.Bytes()) > size || len(s.Bytes()) > size {
		return nil, errMalformed
	}
	out := make([]byte, 2*size)
	r.FillBytes(out[:size])
	s.FillBytes(out[size:])
	return out, nil
}

func hashAlg(h crypto.Hash) (tpm2.TPMIAlgHash, error) {
	switch h {
	case crypto.SHA1:
		return tpm2.TPMAlgSHA1, nil
	case crypto.SHA256:
		return tpm2.TPMAlgSHA256, nil
	case crypto.SHA384:
		return tpm2.TPMAlgSHA384, nil
	case crypto.SHA512:
		return tpm2.TPMAlgSHA512, nil
	}
	return 0, fmt.Errorf("hash %v is not supported", h)
}
