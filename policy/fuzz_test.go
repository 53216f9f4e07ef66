package policy

import (
	"bytes"
	"slices"
	"testing"
	"unicode/utf8"

	"github.com/brokerd/brokerd/internal/testpki"
)

// FuzzRoles: a role extension never panics the parser, and what it
// accepts is canonical DER: encoding the roles again gives the input.
func FuzzRoles(f *testing.F) {
	for _, seed := range [][]byte{
		seq(utf8s("https://directory.example/roles/a"), utf8s("https://directory.example/roles/b")),
		seq(), seq(tlv(0x13, []byte("x"))), unhex("3081030c0161"), []byte("garbage"),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, der []byte) {
		roles := parseRoles(der)
		if roles == nil {
			return
		}
		for _, r := range roles {
			if !utf8.ValidString(r) {
				t.Fatalf("role %q is not UTF-8", r)
			}
		}
		if again := marshalRoles(roles); !bytes.Equal(again, der) {
			t.Fatalf("%x parsed as %q, which encodes as %x", der, roles, again)
		}
	})
}

// FuzzPSD2: a qcStatements extension never panics the parser, and what
// it yields are distinct known roles under a well-formed NCA id.
func FuzzPSD2(f *testing.F) {
	ai := testpki.PSD2Roles(f, "PSP_AI")
	for _, seed := range [][]byte{
		unhex(obSample), unhex(obFlattened),
		testpki.PSD2QCStatements(f, testpki.PSD2Roles(f, "PSP_AS", "PSP_PI", "PSP_AI", "PSP_IC"), "Financial Conduct Authority", "GB-FCA").Value,
		testpki.PSD2QCStatements(f, []testpki.PSD2Role{{OID: ai[0].OID, Name: "PSP_PI"}}, "FCA", "GB-FCA").Value,
		seq(qcCompliance(), psd2(role(3, "PSP_AI"), role(5, "PSP_XX"))),
		seq(psd2(role(3, "PSP_AI")), psd2(role(2, "PSP_PI"))),
		[]byte("garbage"),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, der []byte) {
		roles, ncaID := parseQCStatements(der)
		if ncaID == "" {
			if roles != nil {
				t.Fatalf("roles %q without an NCA id", roles)
			}
			return
		}
		if n := utf8.RuneCountInString(ncaID); !utf8.ValidString(ncaID) || n > 256 {
			t.Fatalf("NCA id %q", ncaID)
		}
		for i, r := range roles {
			if !isPSD2Role(r) || slices.Contains(roles[:i], r) {
				t.Fatalf("roles %q", roles)
			}
		}
	})
}
