package certs

import (
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
)

// X5tS256 is a certificate's SHA-256 thumbprint as JOSE (x5t#S256) and
// RFC 8705's cnf claim write it: base64url without padding.
func X5tS256(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// SHA1Fingerprint is a certificate's SHA-1 fingerprint in lower-case hex,
// as holder-of-key schemes behind TLS-terminating proxies compare it.
func SHA1Fingerprint(c *x509.Certificate) string {
	sum := sha1.Sum(c.Raw)
	return hex.EncodeToString(sum[:])
}

// oidOrganizationID is organizationIdentifier (ETSI EN 319 412-1).
var oidOrganizationID = asn1.ObjectIdentifier{2, 5, 4, 97}

// OrganizationID is the subject's organizationIdentifier (2.5.4.97), the
// PSD2 authorisation number of eIDAS certificates ("PSDGB-FCA-123456");
// "" when it has none.
func OrganizationID(c *x509.Certificate) string {
	for _, n := range c.Subject.Names {
		if s, ok := n.Value.(string); ok && n.Type.Equal(oidOrganizationID) {
			return s
		}
	}
	return ""
}
