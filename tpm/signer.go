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
	if _, err := hashAlg(h); err != nil {
		return nil, fmt.Errorf("tpm: sign with %s: %w", s.k, err)
	}
	if len(digest) != h.Size() {
		return nil, fmt.Errorf("tpm: sign with %s: digest is %d bytes, want %d for %v", s.k, len(digest), h.Size(), h)
	}
	var (
		sig []byte
		err error
	)
	switch pub := s.k.public.(type) {
	case *rsa.PublicKey:
		sig, err = s.signRSA(ctx, pub, digest, opts)
	case *ecdsa.PublicKey:
		sig, err = s.signECDSA(ctx, pub, digest)
	default:
		err = fmt.Errorf("unsupported key type %T", s.k.public)
	}
	if err != nil {
		return nil, fmt.Errorf("tpm: sign with %s: %w", s.k, err)
	}
	return sig, nil
}

// signRSA signs PKCS #1 v1.5, or PSS when opts is *rsa.PSSOptions, and
// checks the signature before it returns it: with the PSS salt length it
// asked for, so a chip's other choice never reaches a client.
func (s *Signer) signRSA(ctx context.Context, pub *rsa.PublicKey, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	h := opts.HashFunc()
	pss, isPSS := opts.(*rsa.PSSOptions)
	saltLen := 0
	if isPSS {
		saltLen = pss.SaltLength
		if saltLen == rsa.PSSSaltLengthAuto || saltLen == rsa.PSSSaltLengthEqualsHash {
			saltLen = h.Size()
		}
	}
	var (
		sig []byte
		err error
	)
	if s.d.FIPS() {
		sig, err = s.signRSAWithSign(ctx, digest, h, isPSS, saltLen)
	} else {
		sig, err = s.signRSARaw(ctx, pub, digest, h, isPSS, saltLen)
	}
	if err != nil {
		return nil, err
	}
	k := pub.Size()
	if len(sig) < k {
		sig = append(make([]byte, k-len(sig)), sig...)
	}
	if isPSS {
		err = rsa.VerifyPSS(pub, h, digest, sig, &rsa.PSSOptions{SaltLength: saltLen})
	} else {
		err = rsa.VerifyPKCS1v15(pub, h, digest, sig)
	}
	if err != nil {
		return nil, errors.New("the TPM returned a signature that does not verify")
	}
	return sig, nil
}

// signRSARaw builds the encoding in Go and has the TPM apply the private
// key (TPM2_RSA_Decrypt with scheme NULL): the same bytes on every TPM.
func (s *Signer) signRSARaw(ctx context.Context, pub *rsa.PublicKey, digest []byte, h crypto.Hash, isPSS bool, saltLen int) ([]byte, error) {
	var (
		em  []byte
		err error
	)
	if isPSS {
		em, err = emsaPSS(h, digest, saltLen, pub.N.BitLen(), pub.Size())
	} else {
		em, err = emsaPKCS1v15(h, digest, pub.Size())
	}
	if err != nil {
		return nil, err
	}
	var sig []byte
	err = s.d.doChecked(ctx, s.class, func() error {
		o, err := s.d.load(s.k)
		if err != nil {
			return err
		}
		sig, err = s.d.rsaDecrypt(o, s.k.blob.Auth, em)
		return err
	})
	return sig, err
}

// signRSAWithSign signs with TPM2_Sign (RSASSA or RSAPSS), for a TPM in
// FIPS 140-2 mode, which refuses raw RSA. Such a TPM's PSS salt is the
// hash length (FIPS 186 allows no more), the only one brokerd signs
// with; the hash must be one the TPM has.
func (s *Signer) signRSAWithSign(ctx context.Context, digest []byte, h crypto.Hash, isPSS bool, saltLen int) ([]byte, error) {
	hash, _ := hashAlg(h)
	if !s.d.HasHash(hash) {
		return nil, fmt.Errorf("the TPM is in FIPS mode and lacks %s: RSA signatures with it are %w", hashName(hash), ErrUnsupported)
	}
	scheme := tpm2.TPMAlgRSASSA
	if isPSS {
		if saltLen != h.Size() {
			return nil, fmt.Errorf("the TPM is in FIPS mode: PSS salts are the hash length (%d), not %d", h.Size(), saltLen)
		}
		scheme = tpm2.TPMAlgRSAPSS
	}
	var sig []byte
	err := s.d.doChecked(ctx, s.class, func() error {
		o, err := s.d.load(s.k)
		if err != nil {
			return err
		}
		sig, err = s.d.rsaSign(o, s.k.blob.Auth, digest, scheme, hash)
		return err
	})
	return sig, err
}

// signECDSA signs with TPM2_Sign, giving the TPM a digest of the curve's
// size whatever hash digest is of (see ecdsa.go), and returns ASN.1 DER.
func (s *Signer) signECDSA(ctx context.Context, pub *ecdsa.PublicKey, digest []byte) ([]byte, error) {
	hash, ok := ecdsaHash(s.k.alg)
	switch {
	case !ok:
		return nil, fmt.Errorf("%s keys cannot sign in a TPM", s.k.alg)
	case !s.d.HasHash(hash):
		return nil, fmt.Errorf("%s signatures are %w: it lacks %s", s.k.alg, ErrUnsupported, hashName(hash))
	}
	input := ecdsaInput(digest, (pub.Curve.Params().BitSize+7)/8)
	var r, sv []byte
	err := s.d.doChecked(ctx, s.class, func() error {
		o, err := s.d.load(s.k)
		if err != nil {
			return err
		}
		r, sv, err = s.d.ecdsaSign(o, s.k.blob.Auth, input, hash)
		return err
	})
	if err != nil {
		return nil, err
	}
	return ecdsaDER(r, sv)
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
