package certs

import (
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
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
