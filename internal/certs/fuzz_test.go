package certs_test

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"slices"
	"testing"

	"github.com/brokerd/brokerd/internal/certs"
	"github.com/brokerd/brokerd/internal/testpki"
)

// FuzzQcTypes: any qcStatements extension, however malformed, gives a
// list of known type names or nothing, and never a panic: a QTSP's (or an
// attacker's) certificate reaches this parser before anything trusts it.
func FuzzQcTypes(f *testing.F) {
	for _, types := range [][]string{{"web"}, {"eseal"}, {"esign", "eseal"}, nil} {
		f.Add(testpki.QcTypeStatements(f, types...).Value)
	}
	f.Add(testpki.PSD2QCStatements(f, testpki.PSD2Roles(f, "PSP_PI", "PSP_AI"), "Finnish FSA", "FI-FSA").Value)
	f.Add([]byte{0x30, 0x00})
	f.Add([]byte{0x30, 0x80, 0x00, 0x00})
	oid := asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 3}
	f.Fuzz(func(t *testing.T, der []byte) {
		c := &x509.Certificate{Extensions: []pkix.Extension{{Id: oid, Value: der}}}
		for _, ty := range certs.QcTypes(c) {
			if !slices.Contains([]string{"esign", "eseal", "web"}, ty) {
				t.Fatalf("QcTypes gave %q", ty)
			}
		}
	})
}
