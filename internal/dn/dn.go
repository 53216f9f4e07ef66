// Package dn parses and formats X.509 distinguished names as operators
// write them (RFC 4514 or openssl style), naming the attributes eIDAS
// certificates carry, organizationIdentifier included.
package dn

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"slices"
	"strings"
)

// subjectAttrs maps attribute names, as operators and openssl write them, to
// their OIDs. organizationIdentifier (2.5.4.97) carries the PSD2
// authorisation number of eIDAS certificates (ETSI EN 319 412-1).
var subjectAttrs = map[string]asn1.ObjectIdentifier{
	"C":                      {2, 5, 4, 6},
	"ST":                     {2, 5, 4, 8},
	"L":                      {2, 5, 4, 7},
	"STREET":                 {2, 5, 4, 9},
	"O":                      {2, 5, 4, 10},
	"OU":                     {2, 5, 4, 11},
	"CN":                     {2, 5, 4, 3},
	"SERIALNUMBER":           {2, 5, 4, 5},
	"POSTALCODE":             {2, 5, 4, 17},
	"ORGANIZATIONIDENTIFIER": {2, 5, 4, 97},
	"EMAILADDRESS":           {1, 2, 840, 113549, 1, 9, 1},
	"DC":                     {0, 9, 2342, 19200300, 100, 1, 25},
}

// Parse parses a distinguished name written RFC 4514 style, most
// specific attribute first ("CN=qseal,O=Example Oy,C=FI", "\," escapes a
// comma), or openssl style, most specific last ("/C=FI/O=Example Oy/CN=qseal").
// Both give the same name.
func Parse(s string) (pkix.Name, error) {
	s = strings.TrimSpace(s)
	var parts []string
	if strings.HasPrefix(s, "/") {
		parts = splitEscaped(s[1:], '/')
	} else {
		parts = splitEscaped(s, ',')
		slices.Reverse(parts)
	}
	var rdn pkix.RDNSequence
	for _, p := range parts {
		k, v, ok := strings.Cut(p, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || k == "" || v == "" {
			return pkix.Name{}, fmt.Errorf("subject %q: %q is not TYPE=value", s, p)
		}
		oid, known := subjectAttrs[strings.ToUpper(k)]
		if !known {
			return pkix.Name{}, fmt.Errorf("subject %q: unknown attribute %q (want C, ST, L, O, OU, CN, serialNumber, organizationIdentifier, ...)", s, k)
		}
		rdn = append(rdn, pkix.RelativeDistinguishedNameSET{{Type: oid, Value: v}})
	}
	if len(rdn) == 0 {
		return pkix.Name{}, fmt.Errorf("subject %q is empty", s)
	}
	var name pkix.Name
	name.FillFromRDNSequence(&rdn)
	// ExtraNames keeps the order and the attributes pkix.Name has no
	// field for (organizationIdentifier) when the CSR is encoded.
	name.ExtraNames = nil
	for _, set := range rdn {
		name.ExtraNames = append(name.ExtraNames, set[0])
	}
	return name, nil
}

// splitEscaped splits s at sep, honouring backslash escapes.
func splitEscaped(s string, sep byte) []string {
	var (
		out []string
		cur strings.Builder
	)
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		case s[i] == sep:
			out = append(out, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(s[i])
		}
	}
	if cur.Len() > 0 || len(out) > 0 {
		out = append(out, cur.String())
	}
	return out
}

// oidNames names attributes for Format, in the spelling people read.
var oidNames = func() map[string]string {
	names := map[string]string{}
	for name, oid := range subjectAttrs {
		names[oid.String()] = name
	}
	names["2.5.4.97"], names["2.5.4.5"], names["1.2.840.113549.1.9.1"] = "organizationIdentifier", "serialNumber", "emailAddress"
	names["2.5.4.17"], names["2.5.4.9"] = "postalCode", "street"
	return names
}()

// Format renders a DER-encoded name (a certificate's RawSubject) in
// RFC 4514 order, keeping its attribute order and naming the attributes
// Parse knows, organizationIdentifier included.
func Format(raw []byte) string {
	var rdns pkix.RDNSequence
	if rest, err := asn1.Unmarshal(raw, &rdns); err != nil || len(rest) > 0 {
		return ""
	}
	var parts []string
	for i := len(rdns) - 1; i >= 0; i-- {
		var set []string
		for _, atv := range rdns[i] {
			name, ok := oidNames[atv.Type.String()]
			if !ok {
				name = atv.Type.String()
			}
			set = append(set, name+"="+escapeDN(fmt.Sprint(atv.Value)))
		}
		parts = append(parts, strings.Join(set, "+"))
	}
	return strings.Join(parts, ",")
}

// escapeDN escapes an attribute value as RFC 4514 section 2.4 asks.
func escapeDN(v string) string {
	var b strings.Builder
	for i, r := range v {
		switch {
		case strings.ContainsRune(`,+"\<>;`, r),
			i == 0 && (r == ' ' || r == '#'),
			i == len(v)-1 && r == ' ':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Canonical returns the form Format gives the name s parses to, so that
// names written differently compare equal.
func Canonical(s string) (string, error) {
	name, err := Parse(s)
	if err != nil {
		return "", err
	}
	raw, err := asn1.Marshal(name.ToRDNSequence())
	if err != nil {
		return "", fmt.Errorf("subject %q: %w", s, err)
	}
	return Format(raw), nil
}

// OpenSSL renders a DER-encoded name the way openssl's default display
// and UK Open Banking's iss claim write it: in certificate order (least
// specific first), "name = value" joined by ", " ("C = GB, O = Surgicon
// Limited, organizationIdentifier = PSDGB-OB-Unknown0015800001041RHAAY,
// CN = 0015800001041RHAAY"); "" when raw does not parse.
func OpenSSL(raw []byte) string {
	var rdns pkix.RDNSequence
	if rest, err := asn1.Unmarshal(raw, &rdns); err != nil || len(rest) > 0 {
		return ""
	}
	var parts []string
	for _, rdn := range rdns {
		var set []string
		for _, atv := range rdn {
			name, ok := oidNames[atv.Type.String()]
			if !ok {
				name = atv.Type.String()
			}
			set = append(set, name+" = "+fmt.Sprint(atv.Value))
		}
		parts = append(parts, strings.Join(set, " + "))
	}
	return strings.Join(parts, ", ")
}
