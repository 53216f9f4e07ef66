package keys

import (
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"github.com/youmark/pkcs8"

	"github.com/brokerd/brokerd/tpm"
)

// ParsePrivateKeyPEM parses the first private key in PEM data: PKCS #1
// ("RSA PRIVATE KEY"), SEC 1 ("EC PRIVATE KEY"), PKCS #8 ("PRIVATE KEY"),
// encrypted PKCS #8 ("ENCRYPTED PRIVATE KEY", PBES2) or legacy
// OpenSSL-encrypted PKCS #1 / SEC 1 ("Proc-Type: 4,ENCRYPTED"). Data
// without PEM is read as one of the first four in DER, as openssl writes
// them with -outform DER. A key brokerd cannot hold (Ed25519, secp256k1,
// RSA-1024, ...) is a *tpm.UnsupportedKeyError.
func ParsePrivateKeyPEM(data []byte, password PasswordFunc) (crypto.Signer, error) {
	var types []string
	for rest := data; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		switch block.Type {
		case "RSA PRIVATE KEY", "EC PRIVATE KEY", "PRIVATE KEY", "ENCRYPTED PRIVATE KEY":
			return parseKeyBlock(block, password)
		}
		types = append(types, block.Type)
	}
	if len(types) > 0 {
		return nil, fmt.Errorf("no PEM private key found (the PEM holds %s)", strings.Join(types, ", "))
	}
	if t := derKeyType(data); t != "" {
		return parseKeyBlock(&pem.Block{Type: t, Bytes: data}, password)
	}
	return nil, errors.New("no private key found: neither PEM nor DER (PKCS #1, PKCS #8, SEC 1)")
}

// pkcs8Key, encryptedPKCS8Key and sec1Key are the outer shapes of the DER
// keys brokerd reads.
type pkcs8Key struct {
	Version int
	Algo    pkix.AlgorithmIdentifier
	Key     []byte
}

type encryptedPKCS8Key struct {
	Algo pkix.AlgorithmIdentifier
	Data []byte
}

type sec1Key struct {
	Version int
	Key     []byte
	Curve   asn1.ObjectIdentifier `asn1:"optional,explicit,tag:0"`
	Public  asn1.BitString        `asn1:"optional,explicit,tag:1"`
}

// derKeyType returns the PEM type of a DER private key by its shape; ""
// when it is none.
func derKeyType(der []byte) string {
	var p8 pkcs8Key
	var enc encryptedPKCS8Key
	var ec sec1Key
	switch {
	case isDER(der, &p8):
		return "PRIVATE KEY"
	case isDER(der, &enc):
		return "ENCRYPTED PRIVATE KEY"
	case isDER(der, &ec):
		return "EC PRIVATE KEY"
	}
	if _, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return "RSA PRIVATE KEY"
	}
	return ""
}

func isDER(der []byte, v any) bool {
	rest, err := asn1.Unmarshal(der, v)
	return err == nil && len(rest) == 0
}

// keyTypeOIDs name the algorithms and curves of keys brokerd does not hold,
// when x509 cannot parse them.
var keyTypeOIDs = map[string]string{
	"1.3.101.110": "X25519", "1.3.101.111": "X448", "1.3.101.112": "Ed25519", "1.3.101.113": "Ed448",
	"1.2.840.10040.4.1": "DSA", "1.2.840.113549.1.1.10": "RSASSA-PSS",
	"1.3.132.0.10": "EC secp256k1", "1.2.156.10197.1.301": "EC SM2",
	"1.3.36.3.3.2.8.1.1.7": "EC brainpoolP256r1", "1.3.36.3.3.2.8.1.1.11": "EC brainpoolP384r1",
	"1.3.36.3.3.2.8.1.1.13": "EC brainpoolP512r1",
}

// unparsedKeyType names the type of a PKCS #8 or SEC 1 key that x509
// could not parse, from its algorithm or curve; "" when it cannot tell.
func unparsedKeyType(der []byte) string {
	var curve asn1.ObjectIdentifier
	var p8 pkcs8Key
	var ec sec1Key
	switch {
	case isDER(der, &p8):
		if t, ok := keyTypeOIDs[p8.Algo.Algorithm.String()]; ok {
			return t
		}
		if _, err := asn1.Unmarshal(p8.Algo.Parameters.FullBytes, &curve); err != nil {
			return ""
		}
	case isDER(der, &ec) && len(ec.Curve) > 0:
		curve = ec.Curve
	default:
		return ""
	}
	if t, ok := keyTypeOIDs[curve.String()]; ok {
		return t
	}
	return "EC " + curve.String()
}

func parseKeyBlock(block *pem.Block, password PasswordFunc) (crypto.Signer, error) {
	der := block.Bytes
	//lint:ignore SA1019 legacy OpenSSL encryption is what older eIDAS key files use; the reference broker reads it too.
	if x509.IsEncryptedPEMBlock(block) {
		pw, err := askPassword(password)
		if err != nil {
			return nil, err
		}
		//lint:ignore SA1019 see above.
		der, err = x509.DecryptPEMBlock(block, pw)
		if err != nil {
			return nil, fmt.Errorf("decrypt %s: %w", block.Type, ErrPassword)
		}
		defer clear(der)
	}
	var (
		key any
		err error
	)
	switch block.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(der)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(der)
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(der)
	case "ENCRYPTED PRIVATE KEY":
		pw, perr := askPassword(password)
		if perr != nil {
			return nil, perr
		}
		key, err = pkcs8.ParsePKCS8PrivateKey(der, pw)
		if err != nil && strings.Contains(err.Error(), "password") {
			return nil, fmt.Errorf("decrypt %s: %w", block.Type, ErrPassword)
		}
	}
	if err != nil {
		if t := unparsedKeyType(der); t != "" {
			return nil, &tpm.UnsupportedKeyError{Type: t}
		}
		return nil, fmt.Errorf("parse %s: %w", block.Type, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, &tpm.UnsupportedKeyError{Type: tpm.KeyType(key)}
	}
	if _, err := tpm.AlgorithmOf(signer.Public()); err != nil {
		return nil, err
	}
	return signer, nil
}

func askPassword(password PasswordFunc) ([]byte, error) {
	if password == nil {
		return nil, fmt.Errorf("the key is encrypted: %w", &NoPasswordError{})
	}
	pw, err := password()
	if err != nil {
		return nil, fmt.Errorf("the key is encrypted: %w", err)
	}
	if len(pw) == 0 {
		return nil, fmt.Errorf("the key is encrypted: %w", ErrPassword)
	}
	return pw, nil
}
