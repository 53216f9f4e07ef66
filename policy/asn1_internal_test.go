package policy

import (
	"encoding/asn1"
	"encoding/hex"
	"reflect"
	"strings"
	"testing"
)

// The UK Open Banking example (roles PSP_PI and PSP_AI, FCA) after a
// QcType web statement, quoted in apple/eidas issue 24: the profile's
// encoding, then the flattened one a library produced.
const (
	obSample    = "306e3013060604008e4601063009060704008e4601060330570606040081982702304d302630110607040081982701020c065053505f504930110607040081982701030c065053505f41490c1b46696e616e6369616c20436f6e6475637420417574686f726974790c0647422d464341"
	obFlattened = "306c3013060604008e4601063009060704008e4601060330550606040081982702304b302430220607040081982701020c065053505f50490607040081982701030c065053505f41490c1b46696e616e6369616c20436f6e6475637420417574686f726974790c0647422d464341"
)

// tlv encodes one DER element.
func tlv(tag byte, parts ...[]byte) []byte {
	var body []byte
	for _, p := range parts {
		body = append(body, p...)
	}
	out := []byte{tag}
	switch n := len(body); {
	case n < 0x80:
		out = append(out, byte(n))
	case n < 0x100:
		out = append(out, 0x81, byte(n))
	default:
		out = append(out, 0x82, byte(n>>8), byte(n))
	}
	return append(out, body...)
}

func seq(parts ...[]byte) []byte { return tlv(0x30, parts...) }
func utf8s(s string) []byte      { return tlv(0x0c, []byte(s)) }

func oid(arcs ...int) []byte {
	b, err := asn1.Marshal(asn1.ObjectIdentifier(arcs))
	if err != nil {
		panic(err)
	}
	return b
}

func unhex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// role is a RoleOfPSP with the role OID 0.4.0.19495.1.arc.
func role(arc int, name string) []byte { return seq(oid(0, 4, 0, 19495, 1, arc), utf8s(name)) }

// psd2 is a PSD2 QCStatement with these roles, NCA "FCA", NCA id "GB-FCA".
func psd2(roles ...[]byte) []byte {
	return seq(oid(0, 4, 0, 19495, 2), seq(seq(roles...), utf8s("FCA"), utf8s("GB-FCA")))
}

// qcCompliance is the QcCompliance statement, without info.
func qcCompliance() []byte { return seq(oid(0, 4, 0, 1862, 1, 1)) }

func TestParseRoles(t *testing.T) {
	t.Parallel()
	a, b := "https://directory.example/roles/a", "https://directory.example/roles/ü"
	cases := []struct {
		name string
		der  []byte
		want []string
	}{
		{"two roles", seq(utf8s(a), utf8s(b)), []string{a, b}},
		{"long form length", seq(utf8s(strings.Repeat("x", 200))), []string{strings.Repeat("x", 200)}},
		{"empty sequence", seq(), nil},
		{"PrintableString", seq(utf8s(a), tlv(0x13, []byte(a))), nil},
		{"IA5String", seq(tlv(0x16, []byte(a))), nil},
		{"invalid UTF-8", seq(utf8s("\xff\xfe")), nil},
		{"trailing bytes", append(seq(utf8s(a)), 0), nil},
		{"SET instead of SEQUENCE", tlv(0x31, utf8s(a)), nil},
		{"nested sequence", seq(seq(utf8s(a))), nil},
		{"non-minimal length", unhex("3081030c0161"), nil},
		{"indefinite length", unhex("30800c01610000"), nil},
		{"truncated", seq(utf8s(a))[:10], nil},
		{"a bare UTF8String", utf8s(a), nil},
		{"nothing", nil, nil},
	}
	for _, c := range cases {
		if got := parseRoles(c.der); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}

func TestParseQCStatements(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("é", 256)
	cases := []struct {
		name  string
		der   []byte
		roles []string
		ncaID string
	}{
		{"OB sample after QcType", unhex(obSample), []string{"PSP_PI", "PSP_AI"}, "GB-FCA"},
		{"OB sample flattened", unhex(obFlattened), nil, ""},
		{"after QcCompliance", seq(qcCompliance(), psd2(role(1, "PSP_AS"), role(4, "PSP_IC"))), []string{"PSP_AS", "PSP_IC"}, "GB-FCA"},
		{"before other statements", seq(psd2(role(3, "PSP_AI")), qcCompliance()), []string{"PSP_AI"}, "GB-FCA"},
		{"name disagrees with OID", seq(psd2(role(3, "PSP_PI"), role(2, "PSP_PI"))), []string{"PSP_PI"}, "GB-FCA"},
		{"name in lower case", seq(psd2(role(3, "psp_ai"))), nil, "GB-FCA"},
		{"unknown role OID", seq(psd2(role(5, "PSP_XX"), role(1, "PSP_AS"))), []string{"PSP_AS"}, "GB-FCA"},
		{"role OID too short", seq(psd2(seq(oid(0, 4, 0, 19495, 1), utf8s("PSP_AS")))), nil, "GB-FCA"},
		{"role OID too long", seq(psd2(seq(oid(0, 4, 0, 19495, 1, 3, 1), utf8s("PSP_AI")))), nil, "GB-FCA"},
		{"role given twice", seq(psd2(role(3, "PSP_AI"), role(3, "PSP_AI"))), []string{"PSP_AI"}, "GB-FCA"},
		{"no roles", seq(psd2()), nil, "GB-FCA"},
		{"no PSD2 statement", seq(qcCompliance()), nil, ""},
		{"two PSD2 statements", seq(psd2(role(3, "PSP_AI")), psd2(role(2, "PSP_PI"))), nil, ""},
		{"PSD2 statement without info", seq(seq(oid(0, 4, 0, 19495, 2))), nil, ""},
		{"statement with two infos", seq(seq(oid(0, 4, 0, 19495, 2), seq(seq(role(3, "PSP_AI")), utf8s("FCA"), utf8s("GB-FCA")), tlv(0x05))), nil, ""},
		{"info not a SEQUENCE", seq(seq(oid(0, 4, 0, 19495, 2), utf8s("PSP_AI"))), nil, ""},
		{"PSD2QcType with a fourth field", seq(seq(oid(0, 4, 0, 19495, 2), seq(seq(role(3, "PSP_AI")), utf8s("FCA"), utf8s("GB-FCA"), utf8s("x")))), nil, ""},
		{"NCA id missing", seq(seq(oid(0, 4, 0, 19495, 2), seq(seq(role(3, "PSP_AI")), utf8s("FCA")))), nil, ""},
		{"NCA id empty", seq(seq(oid(0, 4, 0, 19495, 2), seq(seq(role(3, "PSP_AI")), utf8s("FCA"), utf8s("")))), nil, ""},
		{"NCA name of 256 characters", seq(seq(oid(0, 4, 0, 19495, 2), seq(seq(role(3, "PSP_AI")), utf8s(long), utf8s("GB-FCA")))), []string{"PSP_AI"}, "GB-FCA"},
		{"NCA name of 257 characters", seq(seq(oid(0, 4, 0, 19495, 2), seq(seq(role(3, "PSP_AI")), utf8s(long+"e"), utf8s("GB-FCA")))), nil, ""},
		{"NCA id not UTF-8", seq(seq(oid(0, 4, 0, 19495, 2), seq(seq(role(3, "PSP_AI")), utf8s("FCA"), utf8s("GB-\xff")))), nil, ""},
		{"NCA id a PrintableString", seq(seq(oid(0, 4, 0, 19495, 2), seq(seq(role(3, "PSP_AI")), utf8s("FCA"), tlv(0x13, []byte("GB-FCA"))))), nil, ""},
		{"role name a PrintableString", seq(psd2(seq(oid(0, 4, 0, 19495, 1, 3), tlv(0x13, []byte("PSP_AI"))))), nil, ""},
		{"role without a name", seq(psd2(seq(oid(0, 4, 0, 19495, 1, 3)))), nil, ""},
		{"role not a SEQUENCE", seq(psd2(oid(0, 4, 0, 19495, 1, 3), utf8s("PSP_AI"))), nil, ""},
		{"statement without an OID", seq(seq(utf8s("x")), psd2(role(3, "PSP_AI"))), nil, ""},
		{"statement not a SEQUENCE", seq(oid(0, 4, 0, 1862, 1, 1), psd2(role(3, "PSP_AI"))), nil, ""},
		{"trailing bytes", append(seq(psd2(role(3, "PSP_AI"))), 0), nil, ""},
		{"non-minimal length", append([]byte{0x30, 0x81, byte(len(psd2(role(3, "PSP_AI"))))}, psd2(role(3, "PSP_AI"))...), nil, ""},
		{"garbage", []byte("not DER at all"), nil, ""},
		{"nothing", nil, nil, ""},
	}
	for _, c := range cases {
		roles, ncaID := parseQCStatements(c.der)
		if !reflect.DeepEqual(roles, c.roles) || ncaID != c.ncaID {
			t.Errorf("%s: %q %q, want %q %q", c.name, roles, ncaID, c.roles, c.ncaID)
		}
	}
}
