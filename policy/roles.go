package policy

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// DefaultRoleOID is the OID of Icebreaker One's ib1Roles extension, in
// dotted form: the client's role URLs in the trust framework's Directory,
// a SEQUENCE OF UTF8String.
const DefaultRoleOID = "1.3.6.1.4.1.62329.1.1"

// defaultRoleOID is DefaultRoleOID as an asn1.ObjectIdentifier.
func defaultRoleOID() asn1.ObjectIdentifier {
	return asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 62329, 1, 1}
}

// ParseRoleOID parses the OID of a role extension written in dotted form,
// as the configuration gives it ("1.3.6.1.4.1.62329.1.1").
func ParseRoleOID(s string) (asn1.ObjectIdentifier, error) {
	if s == "" {
		return nil, fmt.Errorf("policy: role OID is empty (leave it out for ib1Roles, %s)", DefaultRoleOID)
	}
	arcs := strings.Split(s, ".")
	oid := make(asn1.ObjectIdentifier, len(arcs))
	for i, a := range arcs {
		n, err := strconv.Atoi(a)
		if err != nil || n < 0 || strconv.Itoa(n) != a {
			return nil, fmt.Errorf("policy: role OID %q: arc %q is not a decimal number", s, a)
		}
		oid[i] = n
	}
	if err := checkOID(oid); err != nil {
		return nil, fmt.Errorf("policy: role OID %q: %w", s, err)
	}
	return oid, nil
}

// checkOID reports why oid is not an object identifier DER can encode.
func checkOID(oid asn1.ObjectIdentifier) error {
	switch {
	case len(oid) < 2:
		return errors.New("an OID has at least two arcs")
	case slices.ContainsFunc(oid, func(a int) bool { return a < 0 }):
		return errors.New("an OID has no negative arcs")
	case oid[0] > 2 || (oid[0] < 2 && oid[1] >= 40):
		return errors.New("the first arc must be 0, 1 or 2, and the second below 40 unless the first is 2")
	}
	return nil
}

// RoleExtension encodes roles as the non-critical extension oid (nil or
// empty means DefaultRoleOID), a DER SEQUENCE OF UTF8String, for the
// certificates brokerd issues to clients. Each role must be an absolute
// URL in canonical form, given once: rules match role URLs exactly.
func RoleExtension(oid asn1.ObjectIdentifier, roles []string) (pkix.Extension, error) {
	if len(oid) == 0 {
		oid = defaultRoleOID()
	}
	if err := checkOID(oid); err != nil {
		return pkix.Extension{}, fmt.Errorf("policy: role extension %s: %w", oid, err)
	}
	if len(roles) == 0 {
		return pkix.Extension{}, errors.New("policy: role extension: no roles: give at least one role URL")
	}
	for i, r := range roles {
		if err := checkRoleURL(r); err != nil {
			return pkix.Extension{}, fmt.Errorf("policy: role extension: %w", err)
		}
		if slices.Contains(roles[:i], r) {
			return pkix.Extension{}, fmt.Errorf("policy: role extension: role %q given twice", r)
		}
	}
	return pkix.Extension{Id: slices.Clone(oid), Value: marshalRoles(roles)}, nil
}

// checkRoleURL reports why s cannot be a role: roles are absolute URLs
// (scheme and host) written the way Go writes them back, so that a rule
// and a certificate spell one role one way.
func checkRoleURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("role %q is not a URL: %w", s, err)
	}
	if u.Scheme == "" || u.Host == "" {
		return fmt.Errorf("role %q is not an absolute URL (want scheme://host/..., e.g. https://directory.example/roles/x)", s)
	}
	if c := u.String(); c != s {
		return fmt.Errorf("role %q is not in canonical form: write it %q", s, c)
	}
	return nil
}

// marshalRoles encodes roles as a DER SEQUENCE OF UTF8String.
func marshalRoles(roles []string) []byte {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		for _, r := range roles {
			b.AddASN1(cbasn1.UTF8String, func(b *cryptobyte.Builder) { b.AddBytes([]byte(r)) })
		}
	})
	// The builder fails only for a length over 4 GiB.
	return b.BytesOrPanic()
}

// parseRoles reads a role extension's value, a DER SEQUENCE OF
// UTF8String. Anything else yields no roles.
func parseRoles(der []byte) []string {
	in := cryptobyte.String(der)
	var seq cryptobyte.String
	if !in.ReadASN1(&seq, cbasn1.SEQUENCE) || !in.Empty() {
		return nil
	}
	var roles []string
	for !seq.Empty() {
		var r cryptobyte.String
		if !seq.ReadASN1(&r, cbasn1.UTF8String) || !utf8.Valid(r) {
			return nil
		}
		roles = append(roles, string(r))
	}
	return roles
}
