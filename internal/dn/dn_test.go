package dn_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"testing"

	"github.com/brokerd/brokerd/internal/dn"
)

func TestParseFormat(t *testing.T) {
	t.Parallel()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cases := []struct {
		in, want string // want: the CSR subject as Go prints it
	}{
		{"CN=qseal", "CN=qseal"},
		{"CN=qseal.example, O=Example Oy, C=FI", "CN=qseal.example,O=Example Oy,C=FI"},
		{"/C=FI/ST=Uusimaa/L=Helsinki/O=ExampleOrganisation/CN=ca.example.com", "CN=ca.example.com,O=ExampleOrganisation,L=Helsinki,ST=Uusimaa,C=FI"},
		{"CN= lead,O=#x,OU=a+b", `CN=lead,O=\#x,OU=a\+b`},
		{`CN=x,O=Acme\, Inc`, `CN=x,O=Acme\, Inc`},
		{"CN=tpp,organizationIdentifier=PSDFI-FINFSA-1234567-8", "CN=tpp,organizationIdentifier=PSDFI-FINFSA-1234567-8"},
	}
	for _, c := range cases {
		name, err := dn.Parse(c.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", c.in, err)
			continue
		}
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: name}, key)
		if err != nil {
			t.Fatal(err)
		}
		csr, _ := x509.ParseCertificateRequest(der)
		if got := dn.Format(csr.RawSubject); got != c.want {
			t.Errorf("Parse(%q) encodes as %q, want %q", c.in, got, c.want)
		}
	}
	for _, bad := range []string{"", "CN", "CN=", "XX=1", "/", "CN=a,,O=b"} {
		if _, err := dn.Parse(bad); err == nil {
			t.Errorf("Parse(%q) succeeded", bad)
		}
	}
}

func TestCanonical(t *testing.T) {
	t.Parallel()
	a, err := dn.Canonical("/C=FI/O=Example Oy/CN=Test CA")
	if err != nil {
		t.Fatal(err)
	}
	b, err := dn.Canonical("CN=Test CA, O=Example Oy, C=FI")
	if err != nil || a != b || a != "CN=Test CA,O=Example Oy,C=FI" {
		t.Fatalf("Canonical: %q, %q, %v", a, b, err)
	}
}

// TestOpenSSL: names in certificate order, "name = value", as openssl
// and UK Open Banking's iss write them.
func TestOpenSSL(t *testing.T) {
	atv := func(oid asn1.ObjectIdentifier, v string) pkix.AttributeTypeAndValue {
		return pkix.AttributeTypeAndValue{Type: oid, Value: v}
	}
	c, o, cn, orgID, ou := asn1.ObjectIdentifier{2, 5, 4, 6}, asn1.ObjectIdentifier{2, 5, 4, 10}, asn1.ObjectIdentifier{2, 5, 4, 3},
		asn1.ObjectIdentifier{2, 5, 4, 97}, asn1.ObjectIdentifier{2, 5, 4, 11}
	for _, tc := range []struct {
		in   pkix.RDNSequence
		want string
	}{
		{pkix.RDNSequence{{atv(c, "GB")}, {atv(o, "Surgicon Limited")}, {atv(orgID, "PSDGB-OB-Unknown0015800001041RHAAY")}, {atv(cn, "0015800001041RHAAY")}},
			"C = GB, O = Surgicon Limited, organizationIdentifier = PSDGB-OB-Unknown0015800001041RHAAY, CN = 0015800001041RHAAY"},
		{pkix.RDNSequence{{atv(c, "FI")}, {atv(o, "Example, Oy"), atv(ou, "ops")}, {atv(asn1.ObjectIdentifier{1, 2, 3}, "x")}},
			"C = FI, OU = ops + O = Example, Oy, 1.2.3 = x"}, // DER sorts a SET
	} {
		raw, err := asn1.Marshal(tc.in)
		if err != nil {
			t.Fatal(err)
		}
		if got := dn.OpenSSL(raw); got != tc.want {
			t.Errorf("OpenSSL = %q, want %q", got, tc.want)
		}
	}
	if got := dn.OpenSSL([]byte{0x30}); got != "" {
		t.Errorf("OpenSSL(garbage) = %q", got)
	}
}
