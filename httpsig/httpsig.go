// Package httpsig signs HTTP requests the way Berlin Group NextGenPSD2
// banks check them (draft-cavage HTTP signatures as the NextGenPSD2
// implementation guidelines profile them): a Digest of the body, a
// Signature over the named headers with keyId "SN=<certificate serial in
// hex>,CA=<issuer DN>", and the QSealC itself in TPP-Signature-Certificate.
// X-Request-ID and Date are added when missing, since they are signed.
//
// The package never holds a private key: Key.Sign signs the signing
// string (in brokerd, a TPM key of the registry). It imports nothing of
// brokerd; broker imports it.
package httpsig

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/brokerd/brokerd/internal/dn"
)

// ErrRequest is returned when a request cannot be signed as asked; the
// message says why.
var ErrRequest = errors.New("httpsig: request refused")

func refuse(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrRequest, fmt.Sprintf(format, args...))
}

// Header names brokerd sets or adds.
const (
	HeaderDigest      = "Digest"
	HeaderSignature   = "Signature"
	HeaderCertificate = "TPP-Signature-Certificate"
	HeaderRequestID   = "X-Request-ID"
	HeaderDate        = "Date"
	// RequestTarget is the pseudo-header of the method and target.
	RequestTarget = "(request-target)"
)

// optionalSigned are signed when the request has them (NextGenPSD2
// implementation guidelines, section on signatures), between x-request-id
// and date.
var optionalSigned = []string{"psu-id", "psu-corporate-id", "tpp-redirect-uri"}

// Key is a QSealC: its certificate, the hash its signatures use
// (SHA-256: rsa-sha256, SHA-512: rsa-sha512) and a function that signs a
// signing string with RSASSA-PKCS1-v1_5 over that hash.
type Key struct {
	Cert *x509.Certificate
	Hash crypto.Hash
	Sign func(signingString []byte) ([]byte, error)
}

// Request is the request to sign, as it will be sent.
type Request struct {
	Method string
	// Target is the request-target as sent: escaped path and query.
	Target  string
	Headers [][2]string
	Body    []byte
	// SignedHeaders names the headers to sign, in order; nil: digest,
	// x-request-id, the PSU and redirect headers present, date.
	SignedHeaders []string
	// RequestTarget puts (request-target) first in the default list.
	RequestTarget bool
	Now           time.Time
}

// Result is what signing gives.
type Result struct {
	// Headers are the request's headers, then those added: X-Request-ID
	// and Date when missing, Digest (when missing), Signature,
	// TPP-Signature-Certificate.
	Headers [][2]string
	// Signed are the names signed, in order; Algorithm is rsa-sha256 or
	// rsa-sha512; SigningString is what was signed.
	Signed        []string
	Algorithm     string
	SigningString string
}

// Sign signs r with k.
func Sign(k Key, r Request) (Result, error) {
	alg, err := algorithm(k)
	if err != nil {
		return Result{}, err
	}
	headers, err := complete(r, k.Hash)
	if err != nil {
		return Result{}, err
	}
	names, err := signedNames(r, headers)
	if err != nil {
		return Result{}, err
	}
	if err := checkLine(r.Method, r.Target); err != nil {
		return Result{}, err
	}
	ss, err := SigningString(headers, names, r.Method, r.Target)
	if err != nil {
		return Result{}, refuse("%v", err)
	}
	sig, err := k.Sign([]byte(ss))
	if err != nil {
		return Result{}, fmt.Errorf("httpsig: sign: %w", err)
	}
	signature := fmt.Sprintf(`keyId="%s",algorithm="%s",headers="%s",signature="%s"`,
		KeyID(k.Cert), alg, strings.Join(names, " "), base64.StdEncoding.EncodeToString(sig))
	headers = append(headers, [2]string{HeaderSignature, signature},
		[2]string{HeaderCertificate, base64.StdEncoding.EncodeToString(k.Cert.Raw)})
	return Result{Headers: headers, Signed: names, Algorithm: alg, SigningString: ss}, nil
}

// algorithm names the signature algorithm of k.
func algorithm(k Key) (string, error) {
	if k.Cert == nil {
		return "", refuse("the key has no certificate: Berlin Group signatures name it in keyId and send it in %s", HeaderCertificate)
	}
	if _, ok := k.Cert.PublicKey.(*rsa.PublicKey); !ok {
		return "", refuse("Berlin Group signatures need an RSA QSealC (rsa-sha256 or rsa-sha512); this key is %s", k.Cert.PublicKeyAlgorithm)
	}
	switch k.Hash {
	case crypto.SHA256:
		return "rsa-sha256", nil
	case crypto.SHA512:
		return "rsa-sha512", nil
	}
	return "", refuse("hash %v: want SHA256 or SHA512", k.Hash)
}

// complete checks the request's headers and adds X-Request-ID, Date and
// Digest when missing; a Digest given must be the body's.
func complete(r Request, h crypto.Hash) ([][2]string, error) {
	seen := map[string]bool{}
	for _, kv := range r.Headers {
		name := strings.ToLower(kv[0])
		if seen[name] {
			return nil, refuse("header %s is given twice: a signature covers one value", kv[0])
		}
		seen[name] = true
		if name == strings.ToLower(HeaderSignature) || name == strings.ToLower(HeaderCertificate) {
			return nil, refuse("header %s is brokerd's to set", kv[0])
		}
	}
	out := slices.Clone(r.Headers)
	if !seen["x-request-id"] {
		out = append(out, [2]string{HeaderRequestID, newUUID()})
	}
	if !seen["date"] {
		out = append(out, [2]string{HeaderDate, r.Now.UTC().Format(http.TimeFormat)})
	}
	digest := Digest(r.Body, h)
	if v, ok := value(out, "digest"); ok {
		if v != digest {
			return nil, refuse("header Digest %q is not the body's %q", v, digest)
		}
		return out, nil
	}
	return append(out, [2]string{HeaderDigest, digest}), nil
}

// signedNames are the names to sign: the caller's (each present, digest
// and x-request-id among them) or the default list.
func signedNames(r Request, headers [][2]string) ([]string, error) {
	if r.SignedHeaders == nil {
		var names []string
		if r.RequestTarget {
			names = append(names, RequestTarget)
		}
		names = append(names, "digest", "x-request-id")
		for _, n := range optionalSigned {
			if _, ok := value(headers, n); ok {
				names = append(names, n)
			}
		}
		return append(names, "date"), nil
	}
	names := make([]string, 0, len(r.SignedHeaders))
	for _, n := range r.SignedHeaders {
		n = strings.ToLower(n)
		if slices.Contains(names, n) {
			return nil, refuse("signed_headers names %s twice", n)
		}
		names = append(names, n)
	}
	if !slices.Contains(names, "digest") || !slices.Contains(names, "x-request-id") {
		return nil, refuse("signed_headers must include digest and x-request-id (NextGenPSD2 signs them always)")
	}
	return names, nil
}

// SigningString is the string a signature covers: one "name: value" line
// per name (lower case), in order, joined by "\n"; (request-target) is
// the lower-case method, a space and the target.
func SigningString(headers [][2]string, names []string, method, target string) (string, error) {
	lines := make([]string, 0, len(names))
	for _, n := range names {
		if n == RequestTarget {
			lines = append(lines, RequestTarget+": "+strings.ToLower(method)+" "+target)
			continue
		}
		v, ok := value(headers, n)
		if !ok {
			return "", fmt.Errorf("header %s is to be signed but is not in the request", n)
		}
		lines = append(lines, n+": "+v)
	}
	return strings.Join(lines, "\n"), nil
}

// value is the value of header name (any case).
func value(headers [][2]string, name string) (string, bool) {
	for _, kv := range headers {
		if strings.EqualFold(kv[0], name) {
			return kv[1], true
		}
	}
	return "", false
}

// Digest is the Digest header's value for body: "SHA-256=<base64>" or
// "SHA-512=<base64>".
func Digest(body []byte, h crypto.Hash) string {
	if h == crypto.SHA512 {
		sum := sha512.Sum512(body)
		return "SHA-512=" + base64.StdEncoding.EncodeToString(sum[:])
	}
	sum := sha256.Sum256(body)
	return "SHA-256=" + base64.StdEncoding.EncodeToString(sum[:])
}

// KeyID is the keyId of a certificate: "SN=<serial in upper-case hex>,
// CA=<issuer DN, RFC 4514, spaces as %20>", as the NextGenPSD2 examples
// write it.
func KeyID(c *x509.Certificate) string {
	return fmt.Sprintf("SN=%X,CA=%s", c.SerialNumber, strings.ReplaceAll(dn.Format(c.RawIssuer), " ", "%20"))
}

// newUUID is a random (version 4) UUID, as X-Request-ID takes.
func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// checkLine refuses a method that is no HTTP token and a target that is no
// origin-form request target (a path and its query, percent-encoded):
// either could put into the signing string lines or fields that the
// request sent does not have.
func checkLine(method, target string) error {
	if method == "" || strings.IndexFunc(method, func(r rune) bool { return !tokenChar(r) }) >= 0 {
		return refuse("method %q is not an HTTP token", method)
	}
	if !strings.HasPrefix(target, "/") {
		return refuse("path %q does not start with /", target)
	}
	if strings.IndexFunc(target, func(r rune) bool { return r <= ' ' || r >= 0x7f }) >= 0 {
		return refuse("path %q holds a space, a control character or a character to percent-encode", target)
	}
	return nil
}

// tokenChar reports whether r may appear in an HTTP token (RFC 9110 5.6.2).
func tokenChar(r rune) bool {
	return r < 0x7f && (r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || strings.ContainsRune("!#$%&'*+-.^_`|~", r))
}
