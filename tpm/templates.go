package tpm

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// Algorithm names a key type and size.
type Algorithm string

// Key algorithms. The TPM holds what it supports (swtpm: RSA-2048/3072,
// P-256/384); the rest can only be sealed.
const (
	RSA2048 Algorithm = "rsa2048"
	RSA3072 Algorithm = "rsa3072"
	RSA4096 Algorithm = "rsa4096"
	P256    Algorithm = "p256"
	P384    Algorithm = "p384"
	P521    Algorithm = "p521"
)

// Algorithms lists every algorithm brokerd knows, in display order.
var Algorithms = []Algorithm{RSA2048, RSA3072, RSA4096, P256, P384, P521}

// ParseAlgorithm parses an algorithm name as CLI flags spell it.
func ParseAlgorithm(s string) (Algorithm, error) {
	for _, a := range Algorithms {
		if string(a) == s {
			return a, nil
		}
	}
	return "", fmt.Errorf("unknown key algorithm %q (want rsa2048, rsa3072, rsa4096, p256, p384 or p521)", s)
}

// IsRSA reports whether a is an RSA algorithm.
func (a Algorithm) IsRSA() bool { return a == RSA2048 || a == RSA3072 || a == RSA4096 }

func (a Algorithm) rsaBits() int {
	switch a {
	case RSA2048:
		return 2048
	case RSA3072:
		return 3072
	case RSA4096:
		return 4096
	}
	return 0
}

func (a Algorithm) curve() (tpm2.TPMECCCurve, elliptic.Curve) {
	switch a {
	case P256:
		return tpm2.TPMECCNistP256, elliptic.P256()
	case P384:
		return tpm2.TPMECCNistP384, elliptic.P384()
	case P521:
		return tpm2.TPMECCNistP521, elliptic.P521()
	}
	return 0, nil
}

// SupportedKeys names the key types brokerd holds, for messages.
const SupportedKeys = "RSA 2048/3072/4096, P-256/384/521"

// UnsupportedKeyError says that brokerd holds no key of its type.
type UnsupportedKeyError struct {
	// Type names the key's type: "RSA-1024", "EC P-224", "Ed25519", ...
	Type string
}

func (e *UnsupportedKeyError) Error() string {
	return "unsupported key type " + e.Type + ": supported: " + SupportedKeys
}

// KeyType names the type of a public or private key for messages, in the
// words of cryptographers rather than of Go: "RSA-2048", "EC P-256",
// "Ed25519", "X25519", ...
func KeyType(key any) string {
	if s, ok := key.(interface{ Public() crypto.PublicKey }); ok {
		key = s.Public()
	}
	switch k := key.(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA-%d", k.N.BitLen())
	case *ecdsa.PublicKey:
		return "EC " + k.Curve.Params().Name
	case ed25519.PublicKey:
		return "Ed25519"
	case *ecdh.PublicKey:
		if k.Curve() == ecdh.X25519() {
			return "X25519"
		}
		return fmt.Sprintf("ECDH %v", k.Curve())
	}
	return "unknown"
}

// AlgorithmOf returns the algorithm of a public key; an
// *UnsupportedKeyError for a key brokerd does not hold.
func AlgorithmOf(pub crypto.PublicKey) (Algorithm, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		switch k.N.BitLen() {
		case 2048:
			return RSA2048, nil
		case 3072:
			return RSA3072, nil
		case 4096:
			return RSA4096, nil
		}
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return P256, nil
		case elliptic.P384():
			return P384, nil
		case elliptic.P521():
			return P521, nil
		}
	}
	return "", &UnsupportedKeyError{Type: KeyType(pub)}
}

// keyTemplate is the public area of a signing key of algorithm alg. RSA
// keys are sign+decrypt with scheme NULL so that brokerd applies the padding
// itself over TPM2_RSA_Decrypt; ECC keys sign with any hash. Keys made in
// the TPM are fixedTPM; imported keys cannot be.
func keyTemplate(alg Algorithm, generated bool) (tpm2.TPMTPublic, error) {
	attrs := tpm2.TPMAObject{
		FixedTPM:            generated,
		FixedParent:         generated,
		SensitiveDataOrigin: generated,
		UserWithAuth:        true,
		NoDA:                true,
		SignEncrypt:         true,
	}
	if alg.IsRSA() {
		attrs.Decrypt = true
		return tpm2.TPMTPublic{
			Type:             tpm2.TPMAlgRSA,
			NameAlg:          tpm2.TPMAlgSHA256,
			ObjectAttributes: attrs,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
				Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
				Scheme:    tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgNull},
				KeyBits:   tpm2.TPMKeyBits(alg.rsaBits()),
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{}),
		}, nil
	}
	curve, _ := alg.curve()
	if curve == 0 {
		return tpm2.TPMTPublic{}, fmt.Errorf("tpm: unknown algorithm %q", alg)
	}
	return tpm2.TPMTPublic{
		Type:             tpm2.TPMAlgECC,
		NameAlg:          tpm2.TPMAlgSHA256,
		ObjectAttributes: attrs,
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme:    tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull},
			CurveID:   curve,
			KDF:       tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
	}, nil
}

// testParms is the public parameters TPM2_TestParms checks for alg.
func testParms(alg Algorithm) tpm2.TPMTPublicParms {
	t, _ := keyTemplate(alg, true)
	return tpm2.TPMTPublicParms{Type: t.Type, Parameters: t.Parameters}
}

// importable maps a software key to the public and sensitive areas of a TPM
// object with the same attributes keyTemplate gives imported keys.
func importable(priv crypto.PrivateKey, auth []byte) (tpm2.TPMTPublic, tpm2.TPMTSensitive, error) {
	switch k := priv.(type) {
	case *rsa.PrivateKey:
		alg, err := AlgorithmOf(&k.PublicKey)
		if err != nil {
			return tpm2.TPMTPublic{}, tpm2.TPMTSensitive{}, err
		}
		if len(k.Primes) != 2 {
			return tpm2.TPMTPublic{}, tpm2.TPMTSensitive{}, fmt.Errorf("multi-prime RSA keys cannot be imported into a TPM")
		}
		pub, _ := keyTemplate(alg, false)
		parms, _ := pub.Parameters.RSADetail()
		if k.E != 65537 {
			parms.Exponent = uint32(k.E)
		}
		size := alg.rsaBits() / 8
		pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: k.N.FillBytes(make([]byte, size))})
		sens := tpm2.TPMTSensitive{
			SensitiveType: tpm2.TPMAlgRSA,
			AuthValue:     tpm2.TPM2BAuth{Buffer: auth},
			Sensitive: tpm2.NewTPMUSensitiveComposite(tpm2.TPMAlgRSA,
				&tpm2.TPM2BPrivateKeyRSA{Buffer: k.Primes[0].FillBytes(make([]byte, size/2))}),
		}
		return pub, sens, nil
	case *ecdsa.PrivateKey:
		alg, err := AlgorithmOf(&k.PublicKey)
		if err != nil {
			return tpm2.TPMTPublic{}, tpm2.TPMTSensitive{}, err
		}
		pub, _ := keyTemplate(alg, false)
		point, err := eccPoint(&k.PublicKey)
		if err != nil {
			return tpm2.TPMTPublic{}, tpm2.TPMTSensitive{}, err
		}
		pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, point)
		d, err := k.Bytes()
		if err != nil {
			return tpm2.TPMTPublic{}, tpm2.TPMTSensitive{}, err
		}
		sens := tpm2.TPMTSensitive{
			SensitiveType: tpm2.TPMAlgECC,
			AuthValue:     tpm2.TPM2BAuth{Buffer: auth},
			Sensitive:     tpm2.NewTPMUSensitiveComposite(tpm2.TPMAlgECC, &tpm2.TPM2BECCParameter{Buffer: d}),
		}
		return pub, sens, nil
	}
	return tpm2.TPMTPublic{}, tpm2.TPMTSensitive{}, &UnsupportedKeyError{Type: KeyType(priv)}
}

// ekTemplate returns the TCG default (low range) EK template for p.
func ekTemplate(p Parent) (tpm2.TPMTPublic, error) {
	switch p {
	case ParentECCEK:
		return tpm2.ECCEKTemplate, nil
	case ParentRSAEK:
		return tpm2.RSAEKTemplate, nil
	}
	return tpm2.TPMTPublic{}, fmt.Errorf("tpm: %q is not an endorsement key", p)
}

// ekPublicArea rebuilds the public area of an EK from its public key, as
// CreatePrimary with the default template produces it.
func ekPublicArea(pub crypto.PublicKey) (Parent, tpm2.TPMTPublic, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() != 2048 || k.E != 65537 {
			return "", tpm2.TPMTPublic{}, fmt.Errorf("not a default RSA endorsement key (want RSA-2048, e=65537)")
		}
		if ROCAFingerprint(k.N) { // a blob wrapped for it is readable by whoever factors it
			return "", tpm2.TPMTPublic{}, fmt.Errorf("the endorsement key: %w", ErrROCA)
		}
		t := tpm2.RSAEKTemplate
		t.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: k.N.FillBytes(make([]byte, 256))})
		return ParentRSAEK, t, nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return "", tpm2.TPMTPublic{}, fmt.Errorf("not a default ECC endorsement key (want P-256)")
		}
		point, err := eccPoint(k)
		if err != nil {
			return "", tpm2.TPMTPublic{}, err
		}
		t := tpm2.ECCEKTemplate
		t.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, point)
		return ParentECCEK, t, nil
	}
	return "", tpm2.TPMTPublic{}, fmt.Errorf("%s is not an endorsement key type (want EC P-256 or RSA-2048)", KeyType(pub))
}

// eccPoint returns the TPM form of an ECDSA public point.
func eccPoint(k *ecdsa.PublicKey) (*tpm2.TPMSECCPoint, error) {
	b, err := k.Bytes() // 0x04 || X || Y
	if err != nil {
		return nil, fmt.Errorf("encode EC point: %w", err)
	}
	n := (len(b) - 1) / 2
	return &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: b[1 : 1+n]},
		Y: tpm2.TPM2BECCParameter{Buffer: b[1+n:]},
	}, nil
}
