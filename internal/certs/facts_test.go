package certs_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"reflect"
	"testing"

	"github.com/brokerd/brokerd/internal/certs"
	"github.com/brokerd/brokerd/internal/testpki"
)

// TestCertificateFacts: what GET /keys shows of a certificate, for a
// QSealC with a PSD2 statement, a QWAC, a flattened (invalid) PSD2
// statement, and a certificate without statements.
func TestCertificateFacts(t *testing.T) {
	ca := testpki.NewCA(t, "QTSP")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	roles := testpki.PSD2Roles(t, "PSP_PI", "PSP_AI")
	orgID := pkix.AttributeTypeAndValue{Type: asn1.ObjectIdentifier{2, 5, 4, 97}, Value: "PSDGB-FCA-123456"}
	for _, c := range []struct {
		name  string
		leaf  testpki.Leaf
		org   string
		types []string
		psd2  *certs.PSD2
	}{
		{"QSealC", testpki.Leaf{Subject: pkix.Name{CommonName: "seal", ExtraNames: []pkix.AttributeTypeAndValue{orgID}},
			Extra: []pkix.Extension{testpki.QSealStatements(t, roles, "Financial Conduct Authority", "GB-FCA")}},
			"PSDGB-FCA-123456", []string{"eseal"}, &certs.PSD2{Roles: []string{"PSP_PI", "PSP_AI"}, NCAName: "Financial Conduct Authority", NCAID: "GB-FCA"}},
		{"QWAC", testpki.Leaf{Subject: pkix.Name{CommonName: "qwac"}, Extra: []pkix.Extension{testpki.PSD2QCStatements(t, roles[:1], "BaFin", "DE-BAFIN")}},
			"", []string{"web"}, &certs.PSD2{Roles: []string{"PSP_PI"}, NCAName: "BaFin", NCAID: "DE-BAFIN"}},
		{"flattened roles", testpki.Leaf{Subject: pkix.Name{CommonName: "bad"}, Extra: []pkix.Extension{testpki.PSD2QCStatementsFlattened(t, roles, "X", "Y")}},
			"", []string{"web"}, nil},
		{"no statements", testpki.Leaf{Subject: pkix.Name{CommonName: "plain"}}, "", nil, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			cert := ca.Issue(t, key.Public(), c.leaf)
			p, ok := certs.PSD2Of(cert)
			if (c.psd2 == nil) == ok || (ok && !reflect.DeepEqual(p, *c.psd2)) {
				t.Errorf("PSD2Of = %+v, %v; want %+v", p, ok, c.psd2)
			}
			sum := sha1.Sum(cert.Raw)
			if certs.OrganizationID(cert) != c.org || !reflect.DeepEqual(certs.QcTypes(cert), c.types) || certs.SHA1Fingerprint(cert) != hex.EncodeToString(sum[:]) {
				t.Errorf("organizationIdentifier %q, QcTypes %v, SHA-1 %s", certs.OrganizationID(cert), certs.QcTypes(cert), certs.SHA1Fingerprint(cert))
			}
		})
	}
}
