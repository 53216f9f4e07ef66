package certs

import (
	"crypto/x509"
	"encoding/asn1"
	"slices"
	"unicode/utf8"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// The PSD2 QCStatement of ETSI TS 119 495 lives in the qcStatements
// extension (RFC 3739), next to others such as QcCompliance and QcType:
//
//	QCStatements ::= SEQUENCE OF QCStatement
//	QCStatement  ::= SEQUENCE { statementId OBJECT IDENTIFIER, statementInfo ANY OPTIONAL }
//	PSD2QcType   ::= SEQUENCE { rolesOfPSP RolesOfPSP, nCAName NCAName, nCAId NCAId }
//	RolesOfPSP   ::= SEQUENCE OF RoleOfPSP
//	RoleOfPSP    ::= SEQUENCE { roleOfPspOid OBJECT IDENTIFIER, roleOfPspName UTF8String (SIZE(1..256)) }
//	NCAName, NCAId ::= UTF8String (SIZE(1..256))

// oidPSD2Statement is id-etsi-psd2-qcStatement.
func oidPSD2Statement() asn1.ObjectIdentifier { return asn1.ObjectIdentifier{0, 4, 0, 19495, 2} }

// oidPSD2Roles is the arc of the PSD2 role OIDs.
func oidPSD2Roles() asn1.ObjectIdentifier { return asn1.ObjectIdentifier{0, 4, 0, 19495, 1} }

// psd2RoleName is the name TS 119 495 gives the role 0.4.0.19495.1.arc;
// "" for other arcs.
func psd2RoleName(arc int) string {
	switch arc {
	case 1:
		return "PSP_AS"
	case 2:
		return "PSP_PI"
	case 3:
		return "PSP_AI"
	case 4:
		return "PSP_IC"
	}
	return ""
}

// psd2RoleOf names the PSD2 role whose OID is oid; "" for other OIDs.
func psd2RoleOf(oid asn1.ObjectIdentifier) string {
	roles := oidPSD2Roles()
	if len(oid) != len(roles)+1 || !oid[:len(roles)].Equal(roles) {
		return ""
	}
	return psd2RoleName(oid[len(roles)])
}

// IsPSD2Role reports whether name is a PSD2 role's canonical name
// (PSP_AS, PSP_PI, PSP_AI, PSP_IC).
func IsPSD2Role(name string) bool {
	for arc := 1; psd2RoleName(arc) != ""; arc++ {
		if psd2RoleName(arc) == name {
			return true
		}
	}
	return false
}

// PSD2 is what a certificate's PSD2 QCStatement (ETSI TS 119 495) says:
// the roles of the payment service provider and its national competent
// authority.
type PSD2 struct {
	Roles   []string `json:"roles"`
	NCAName string   `json:"nca_name"`
	NCAID   string   `json:"nca_id"`
}

// PSD2Of reads the PSD2 QCStatement of c; false when it has none.
func PSD2Of(c *x509.Certificate) (PSD2, bool) {
	for _, ext := range c.Extensions {
		if ext.Id.Equal(oidQCStatements) {
			return ParsePSD2(ext.Value)
		}
	}
	return PSD2{}, false
}

// ParsePSD2 reads the PSD2 roles and the NCA from a qcStatements
// extension's value. A value that is not DER of the ASN.1 above, or that
// has no PSD2 statement or more than one, yields false; a role that is not
// one of the four, or whose name disagrees with its OID, is skipped.
func ParsePSD2(der []byte) (PSD2, bool) {
	info, ok := psd2StatementInfo(der)
	if !ok {
		return PSD2{}, false
	}
	return parsePSD2QcType(info)
}

// psd2StatementInfo returns the statementInfo element of the only PSD2
// statement in a qcStatements value.
func psd2StatementInfo(der []byte) (cryptobyte.String, bool) {
	in := cryptobyte.String(der)
	var statements cryptobyte.String
	if !in.ReadASN1(&statements, cbasn1.SEQUENCE) || !in.Empty() {
		return nil, false
	}
	var found []cryptobyte.String
	for !statements.Empty() {
		var (
			st   cryptobyte.String
			id   asn1.ObjectIdentifier
			info cryptobyte.String
		)
		if !statements.ReadASN1(&st, cbasn1.SEQUENCE) || !st.ReadASN1ObjectIdentifier(&id) {
			return nil, false
		}
		if !st.Empty() && (!st.ReadAnyASN1Element(&info, new(cbasn1.Tag)) || !st.Empty()) {
			return nil, false
		}
		if id.Equal(oidPSD2Statement()) {
			found = append(found, info)
		}
	}
	if len(found) != 1 {
		return nil, false
	}
	return found[0], true
}

// parsePSD2QcType reads a PSD2QcType element.
func parsePSD2QcType(in cryptobyte.String) (PSD2, bool) {
	var qc, rolesOfPSP, ncaName, id cryptobyte.String
	if !in.ReadASN1(&qc, cbasn1.SEQUENCE) || !in.Empty() ||
		!qc.ReadASN1(&rolesOfPSP, cbasn1.SEQUENCE) ||
		!readName(&qc, &ncaName) || !readName(&qc, &id) || !qc.Empty() {
		return PSD2{}, false
	}
	roles := []string{}
	for !rolesOfPSP.Empty() {
		var (
			role cryptobyte.String
			oid  asn1.ObjectIdentifier
			name cryptobyte.String
		)
		if !rolesOfPSP.ReadASN1(&role, cbasn1.SEQUENCE) || !role.ReadASN1ObjectIdentifier(&oid) ||
			!readName(&role, &name) || !role.Empty() {
			return PSD2{}, false
		}
		if r := psd2RoleOf(oid); r != "" && r == string(name) && !slices.Contains(roles, r) {
			roles = append(roles, r)
		}
	}
	return PSD2{Roles: roles, NCAName: string(ncaName), NCAID: string(id)}, true
}

// readName reads a UTF8String of 1 to 256 characters, the size TS 119 495
// sets for role names, NCA names and NCA ids.
func readName(in, out *cryptobyte.String) bool {
	if !in.ReadASN1(out, cbasn1.UTF8String) || !utf8.Valid(*out) {
		return false
	}
	n := utf8.RuneCount(*out)
	return n >= 1 && n <= 256
}
