package mockbank

import (
	"strings"
	"testing"
)

// FuzzParseSignature: the bank's Signature header parser never panics,
// and what it accepts has the four parameters.
func FuzzParseSignature(f *testing.F) {
	for _, s := range []string{`keyId="SN=1,CA=CN=x",algorithm="rsa-sha256",headers="digest x-request-id",signature="AAAA"`,
		`keyId="a", algorithm="b",headers="c",signature="d",keyId="e"`, `keyId=a`, `keyId="`, `,`, ``} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseSignature(s)
		if err != nil {
			return
		}
		for _, n := range []string{"keyId", "algorithm", "headers", "signature"} {
			if strings.Contains(p[n], `"`) {
				t.Fatalf("%s = %q", n, p[n])
			}
			if _, ok := p[n]; !ok {
				t.Fatalf("accepted without %s: %q", n, s)
			}
		}
	})
}
