package policy

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"

	"github.com/brokerd/brokerd/internal/dn"
)

// Identity is what policy knows of a client: its verified certificate.
type Identity struct {
	Subject     string   `json:"subject"`
	CN          string   `json:"cn,omitempty"`
	OUs         []string `json:"ou,omitempty"`
	DNSNames    []string `json:"san_dns,omitempty"`
	URIs        []string `json:"san_uri,omitempty"`
	Fingerprint string   `json:"fingerprint"` // SHA-256 of the leaf's DER, lower-case hex
	// Issuers are the subjects of the certificates above the leaf in its
	// verified chain: the issuing CA first, the root last.
	Issuers []string `json:"issuers,omitempty"`
	// Roles are the role URLs of the leaf's role extension (Icebreaker
	// One's ib1Roles unless configured otherwise), in the certificate's
	// order; nil when the extension is missing or malformed.
	Roles []string `json:"roles,omitempty"`
	// PSD2Roles are the roles of the leaf's ETSI TS 119 495 PSD2
	// QCStatement (PSP_AS, PSP_PI, PSP_AI, PSP_IC) whose name agrees with
	// their OID; nil when the statement is missing or malformed.
	PSD2Roles []string `json:"psd2_roles,omitempty"`
	// NCAID is the PSD2 QCStatement's national competent authority id,
	// e.g. "GB-FCA".
	NCAID string `json:"nca_id,omitempty"`
}

// IdentityOptions say how to read an identity from a certificate.
type IdentityOptions struct {
	// RoleOID is the extension that holds the client's role URLs, a DER
	// SEQUENCE OF UTF8String; nil or empty means DefaultRoleOID.
	RoleOID asn1.ObjectIdentifier
}

// IdentityOf describes the client whose verified chain (leaf first) is
// given, with the default options.
func IdentityOf(chain []*x509.Certificate) Identity {
	return IdentityOptions{}.Of(chain)
}

// Of describes the client whose verified chain (leaf first) is given.
// Extensions that do not parse add nothing to the identity.
func (o IdentityOptions) Of(chain []*x509.Certificate) Identity {
	leaf := chain[0]
	sum := sha256.Sum256(leaf.Raw)
	id := Identity{
		Subject:     dn.Format(leaf.RawSubject),
		CN:          leaf.Subject.CommonName,
		OUs:         leaf.Subject.OrganizationalUnit,
		DNSNames:    leaf.DNSNames,
		Fingerprint: hex.EncodeToString(sum[:]),
	}
	for _, u := range leaf.URIs {
		id.URIs = append(id.URIs, u.String())
	}
	// Issuers come from the verified chain only: a leaf's own issuer field
	// is a claim anyone can write.
	for _, c := range chain[1:] {
		id.Issuers = append(id.Issuers, dn.Format(c.RawSubject))
	}
	if v, ok := extensionValue(leaf, o.roleOID()); ok {
		id.Roles = parseRoles(v)
	}
	if v, ok := extensionValue(leaf, oidQCStatements()); ok {
		id.PSD2Roles, id.NCAID = parseQCStatements(v)
	}
	return id
}

func (o IdentityOptions) roleOID() asn1.ObjectIdentifier {
	if len(o.RoleOID) == 0 {
		return defaultRoleOID()
	}
	return o.RoleOID
}

// extensionValue returns the value of the certificate's extension oid.
func extensionValue(c *x509.Certificate, oid asn1.ObjectIdentifier) ([]byte, bool) {
	for _, e := range c.Extensions {
		if e.Id.Equal(oid) {
			return e.Value, true
		}
	}
	return nil, false
}

// String names the client in logs and errors.
func (id Identity) String() string {
	fp := id.Fingerprint
	if len(fp) > 16 {
		fp = fp[:16]
	}
	return id.Subject + " (sha256 " + fp + "…)"
}
