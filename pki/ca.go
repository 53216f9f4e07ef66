package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/brokerd/brokerd/policy"
	"github.com/brokerd/brokerd/tpm"
)

// backdate is how far before now a certificate's validity starts, for
// clocks that run a little behind.
const backdate = 5 * time.Minute

// NewRoot makes the self-signed certificate of a CA whose key is signer:
// it may sign certificates and CRLs, and no CA below it.
func NewRoot(signer crypto.Signer, subject pkix.Name, validity time.Duration, now time.Time) (*x509.Certificate, error) {
	skid, err := keyID(signer.Public())
	if err != nil {
		return nil, fmt.Errorf("pki: root: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("pki: root: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: subject,
		NotBefore: now.Add(-backdate), NotAfter: now.Add(validity),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage:     x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		SubjectKeyId: skid,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, signer.Public(), signer)
	if err != nil {
		return nil, fmt.Errorf("pki: root: sign: %w", err)
	}
	return x509.ParseCertificate(der)
}

// Authority issues certificates with the CA certificate Cert and its key.
type Authority struct {
	Cert   *x509.Certificate
	Signer crypto.Signer
	// RoleOID is the extension that carries client roles (nil: ib1Roles).
	RoleOID asn1.ObjectIdentifier
}

// NewAuthority checks that signer is the key of cert, a CA certificate.
func NewAuthority(cert *x509.Certificate, signer crypto.Signer, roleOID asn1.ObjectIdentifier) (*Authority, error) {
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("pki: %s is not a CA certificate", cert.Subject)
	}
	pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("pki: the CA key is not the key of %s", cert.Subject)
	}
	return &Authority{Cert: cert, Signer: signer, RoleOID: roleOID}, nil
}

// IssueServer certifies pub as the server certificate for names (DNS
// names and IP addresses; the first is also the common name).
func (a *Authority) IssueServer(pub crypto.PublicKey, names []string, validity time.Duration, now time.Time) (*x509.Certificate, error) {
	if len(names) == 0 {
		return nil, errors.New("pki: server certificate: no names")
	}
	tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: names[0]},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if err := checkDNSName(n); err != nil {
			return nil, fmt.Errorf("pki: server certificate: %w", err)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, strings.ToLower(n))
		}
	}
	return a.issue(tmpl, pub, validity, now)
}

// Client is what a client certificate says: its name (the subject's
// common name; a URL name is also the URI SAN, as the Icebreaker One
// trust framework wants) and its roles.
type Client struct {
	Name  string
	Roles []string
}

// IssueClient certifies the key of csr, whose signature must verify, as
// client c, for client authentication only.
func (a *Authority) IssueClient(csr *x509.CertificateRequest, c Client, validity time.Duration, now time.Time) (*x509.Certificate, error) {
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("pki: the CSR's signature does not verify: %w", err)
	}
	return a.IssueClientKey(csr.PublicKey, c, validity, now)
}

// IssueClientKey certifies pub as client c.
func (a *Authority) IssueClientKey(pub crypto.PublicKey, c Client, validity time.Duration, now time.Time) (*x509.Certificate, error) {
	if err := CheckName(c.Name); err != nil {
		return nil, err
	}
	if err := checkClientKey(pub); err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: c.Name},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if u, err := url.Parse(c.Name); err == nil && u.IsAbs() && u.Host != "" {
		tmpl.URIs = []*url.URL{u}
	}
	if len(c.Roles) > 0 {
		ext, err := policy.RoleExtension(a.RoleOID, c.Roles)
		if err != nil {
			return nil, fmt.Errorf("pki: client %q: %w", c.Name, err)
		}
		tmpl.ExtraExtensions = []pkix.Extension{ext}
	}
	return a.issue(tmpl, pub, validity, now)
}

func (a *Authority) issue(tmpl *x509.Certificate, pub crypto.PublicKey, validity time.Duration, now time.Time) (*x509.Certificate, error) {
	if validity <= 0 {
		return nil, fmt.Errorf("pki: validity %v is not positive", validity)
	}
	var err error
	if tmpl.SerialNumber, err = newSerial(); err != nil {
		return nil, fmt.Errorf("pki: issue: %w", err)
	}
	if tmpl.SubjectKeyId, err = keyID(pub); err != nil {
		return nil, fmt.Errorf("pki: issue: %w", err)
	}
	tmpl.NotBefore, tmpl.NotAfter = now.Add(-backdate), now.Add(validity)
	if tmpl.NotAfter.After(a.Cert.NotAfter) {
		tmpl.NotAfter = a.Cert.NotAfter // never beyond the CA
	}
	tmpl.BasicConstraintsValid = true
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.Cert, pub, a.Signer)
	if err != nil {
		return nil, fmt.Errorf("pki: issue %s: %w", tmpl.Subject, err)
	}
	return x509.ParseCertificate(der)
}

// CheckName checks a client name: printable, no control characters, at
// most 64 characters (the limit of a common name).
func CheckName(name string) error {
	if name == "" {
		return errors.New("pki: the client name is empty")
	}
	if len(name) > 64 {
		return fmt.Errorf("pki: client name %q is longer than 64 characters", name)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("pki: client name %q has control characters", name)
		}
	}
	return nil
}

func checkDNSName(n string) error {
	if n == "" || len(n) > 253 || strings.ContainsAny(n, " /:@") {
		return fmt.Errorf("%q is neither a DNS name nor an IP address", n)
	}
	return nil
}

// checkClientKey accepts RSA of 2048 bits or more, ECDSA on P-256, P-384
// or P-521, and Ed25519.
func checkClientKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("pki: RSA key of %d bits: 2048 or more required", k.N.BitLen())
		}
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
		default:
			return fmt.Errorf("pki: ECDSA curve %s is not accepted (P-256, P-384, P-521)", k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
	default:
		return fmt.Errorf("pki: %s keys are not accepted (RSA 2048 bits or more, EC P-256/384/521, Ed25519)", tpm.KeyType(pub))
	}
	return nil
}

// newSerial draws a positive 128-bit serial number.
func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	return n.Add(n, big.NewInt(1)), nil
}

// keyID is the subject key identifier of RFC 5280 §4.2.1.2 method 1.
func keyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		Key       asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		return nil, err
	}
	sum := sha1.Sum(spki.Key.Bytes)
	return sum[:], nil
}

// SerialHex is how brokerd writes serial numbers: lower-case hex.
func SerialHex(c *x509.Certificate) string { return fmt.Sprintf("%x", c.SerialNumber) }
