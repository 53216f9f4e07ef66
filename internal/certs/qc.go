package certs

import (
	"crypto/x509"
	"encoding/asn1"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// OIDs of the ETSI EN 319 412-5 QCStatements.
var (
	oidQCStatements = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 3}
	oidQcType       = asn1.ObjectIdentifier{0, 4, 0, 1862, 1, 6}
	qcTypeNames     = map[int]string{1: "esign", 2: "eseal", 3: "web"}
)

// QcTypes returns the types a certificate's QcType statement declares:
// "esign", "eseal", "web" (a QWAC). Nil when it has none, or when its
// QCStatements do not parse.
func QcTypes(c *x509.Certificate) []string {
	for _, ext := range c.Extensions {
		if ext.Id.Equal(oidQCStatements) {
			return qcTypes(ext.Value)
		}
	}
	return nil
}

func qcTypes(der []byte) []string {
	in := cryptobyte.String(der)
	var statements cryptobyte.String
	if !in.ReadASN1(&statements, cbasn1.SEQUENCE) {
		return nil
	}
	for !statements.Empty() {
		var st cryptobyte.String
		var id asn1.ObjectIdentifier
		if !statements.ReadASN1(&st, cbasn1.SEQUENCE) || !st.ReadASN1ObjectIdentifier(&id) {
			return nil
		}
		if !id.Equal(oidQcType) {
			continue
		}
		var types cryptobyte.String
		if !st.ReadASN1(&types, cbasn1.SEQUENCE) {
			return nil
		}
		var out []string
		for !types.Empty() {
			var t asn1.ObjectIdentifier
			if !types.ReadASN1ObjectIdentifier(&t) {
				return nil
			}
			if len(t) == len(oidQcType)+1 && t[:len(oidQcType)].Equal(oidQcType) && qcTypeNames[t[len(oidQcType)]] != "" {
				out = append(out, qcTypeNames[t[len(oidQcType)]])
			}
		}
		return out
	}
	return nil
}
