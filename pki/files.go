package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// ErrNotCSR is returned for data that is no certificate signing request.
var ErrNotCSR = errors.New("not a certificate signing request (PEM or DER)")

// ParseCSR reads a certificate signing request, PEM or DER, and checks
// its signature.
func ParseCSR(data []byte) (*x509.CertificateRequest, error) {
	if block, _ := pem.Decode(data); block != nil {
		if block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST" {
			return nil, fmt.Errorf("%w: the PEM holds %s", ErrNotCSR, block.Type)
		}
		data = block.Bytes
	}
	csr, err := x509.ParseCertificateRequest(data)
	if err != nil {
		return nil, ErrNotCSR // the parser's ASN.1 details tell an operator nothing
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, errors.New("the CSR's signature does not verify: it was altered, or not made with the key it carries")
	}
	return csr, nil
}

// ClientFileName makes a client name safe as a file name: characters
// other than letters, digits, '.', '-' and '_' become '_'.
func ClientFileName(name string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, name)
}

// NewClientKey makes a client's key (P-256) where no client has one yet
// (`brokerd client issue`), and returns it with its PKCS #8 PEM encoding.
// The caller clears the PEM once it is written.
func NewClientKey() (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: client key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: client key: %w", err)
	}
	defer clear(der)
	return key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}
