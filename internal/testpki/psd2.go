package testpki

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"testing"
)

// PSD2Role is one RoleOfPSP of an ETSI TS 119 495 PSD2 QCStatement: a
// role's OID and its name. Certificates keep them consistent; a test may
// not.
type PSD2Role struct {
	OID  asn1.ObjectIdentifier
	Name string
}

// PSD2Roles returns the roles named (PSP_AS, PSP_PI, PSP_AI, PSP_IC) with
// their registered OIDs 0.4.0.19495.1.1 to .4.
func PSD2Roles(t testing.TB, names ...string) []PSD2Role {
	t.Helper()
	arcs := map[string]int{"PSP_AS": 1, "PSP_PI": 2, "PSP_AI": 3, "PSP_IC": 4}
	roles := make([]PSD2Role, 0, len(names))
	for _, n := range names {
		arc, ok := arcs[n]
		if !ok {
			t.Fatalf("testpki: %q is not a PSD2 role", n)
		}
		roles = append(roles, PSD2Role{OID: asn1.ObjectIdentifier{0, 4, 0, 19495, 1, arc}, Name: n})
	}
	return roles
}

// qcStatement is RFC 3739's QCStatement ::= SEQUENCE { statementId OID,
// statementInfo ANY OPTIONAL }.
type qcStatement struct {
	ID   asn1.ObjectIdentifier
	Info asn1.RawValue `asn1:"optional"`
}

// roleOfPSP is RoleOfPSP ::= SEQUENCE { roleOfPspOid OID, roleOfPspName UTF8String }.
type roleOfPSP struct {
	OID  asn1.ObjectIdentifier
	Name string `asn1:"utf8"`
}

// psd2QcType is PSD2QcType ::= SEQUENCE { rolesOfPSP SEQUENCE OF
// RoleOfPSP, nCAName UTF8String, nCAId UTF8String }.
type psd2QcType struct {
	Roles   []roleOfPSP
	NCAName string `asn1:"utf8"`
	NCAID   string `asn1:"utf8"`
}

// flatQcType is the wrong encoding: rolesOfPSP holds one SEQUENCE with
// every role's OID and name in a row.
type flatQcType struct {
	Roles   [][]any
	NCAName string `asn1:"utf8"`
	NCAID   string `asn1:"utf8"`
}

// PSD2QCStatements returns a qcStatements extension (1.3.6.1.5.5.7.1.3,
// non-critical) as a QWAC carries it: QcCompliance (0.4.0.1862.1.1, no
// info), QcType (0.4.0.1862.1.6) web, then the PSD2 statement
// (0.4.0.19495.2) with each role its own RoleOfPSP SEQUENCE.
func PSD2QCStatements(t testing.TB, roles []PSD2Role, ncaName, ncaID string) pkix.Extension {
	t.Helper()
	return qcStatements(t, 3, psd2Info(roles, ncaName, ncaID))
}

// QSealStatements is PSD2QCStatements as a QSealC carries it: QcType
// eseal (0.4.0.1862.1.6.2) instead of web.
func QSealStatements(t testing.TB, roles []PSD2Role, ncaName, ncaID string) pkix.Extension {
	t.Helper()
	return qcStatements(t, 2, psd2Info(roles, ncaName, ncaID))
}

// psd2Info is the PSD2 statement's info, each role its own SEQUENCE.
func psd2Info(roles []PSD2Role, ncaName, ncaID string) psd2QcType {
	qc := psd2QcType{NCAName: ncaName, NCAID: ncaID, Roles: []roleOfPSP{}}
	for _, r := range roles {
		qc.Roles = append(qc.Roles, roleOfPSP(r))
	}
	return qc
}

// PSD2QCStatementsFlattened is PSD2QCStatements with the wrong encoding
// seen in the wild (apple/eidas issue 24): every role's OID and name in
// one SEQUENCE instead of a SEQUENCE per role.
func PSD2QCStatementsFlattened(t testing.TB, roles []PSD2Role, ncaName, ncaID string) pkix.Extension {
	t.Helper()
	var flat []any
	for _, r := range roles {
		flat = append(flat, r.OID, asn1.RawValue{Tag: asn1.TagUTF8String, Bytes: []byte(r.Name)})
	}
	return qcStatements(t, 3, flatQcType{Roles: [][]any{flat}, NCAName: ncaName, NCAID: ncaID})
}

// qcStatements encodes QcCompliance, QcType 0.4.0.1862.1.6.typeArc (3:
// web, 2: eseal) and the PSD2 statement whose info is psd2.
func qcStatements(t testing.TB, typeArc int, psd2 any) pkix.Extension {
	t.Helper()
	web := asn1.ObjectIdentifier{0, 4, 0, 1862, 1, 6, typeArc}
	statements := []qcStatement{
		{ID: asn1.ObjectIdentifier{0, 4, 0, 1862, 1, 1}},
		{ID: asn1.ObjectIdentifier{0, 4, 0, 1862, 1, 6}, Info: asn1.RawValue{FullBytes: marshal(t, []asn1.ObjectIdentifier{web})}},
		{ID: asn1.ObjectIdentifier{0, 4, 0, 19495, 2}, Info: asn1.RawValue{FullBytes: marshal(t, psd2)}},
	}
	return pkix.Extension{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 3}, Value: marshal(t, statements)}
}

func marshal(t testing.TB, v any) []byte {
	t.Helper()
	der, err := asn1.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// QcTypeStatements returns a qcStatements extension with QcCompliance and
// a QcType statement of the given types ("esign", "eseal", "web").
func QcTypeStatements(t testing.TB, types ...string) pkix.Extension {
	t.Helper()
	arcs := map[string]int{"esign": 1, "eseal": 2, "web": 3}
	var oids []asn1.ObjectIdentifier
	for _, ty := range types {
		oids = append(oids, asn1.ObjectIdentifier{0, 4, 0, 1862, 1, 6, arcs[ty]})
	}
	statements := []qcStatement{
		{ID: asn1.ObjectIdentifier{0, 4, 0, 1862, 1, 1}},
		{ID: asn1.ObjectIdentifier{0, 4, 0, 1862, 1, 6}, Info: asn1.RawValue{FullBytes: marshal(t, oids)}},
	}
	return pkix.Extension{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 3}, Value: marshal(t, statements)}
}
