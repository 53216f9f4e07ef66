package testpki_test

import (
	"encoding/hex"
	"strings"
	"testing"

	"github.com/brokerd/brokerd/internal/testpki"
)

// The UK Open Banking example (roles PSP_PI and PSP_AI, FCA) after a
// QcType web statement, as apple/eidas issue 24 quotes it: the profile's
// encoding, then the flattened one the library produced.
const (
	obSample     = "3013060604008e4601063009060704008e4601060330570606040081982702304d302630110607040081982701020c065053505f504930110607040081982701030c065053505f41490c1b46696e616e6369616c20436f6e6475637420417574686f726974790c0647422d464341"
	obFlattened  = "3013060604008e4601063009060704008e4601060330550606040081982702304b302430220607040081982701020c065053505f50490607040081982701030c065053505f41490c1b46696e616e6369616c20436f6e6475637420417574686f726974790c0647422d464341"
	qcCompliance = "3008060604008e460101"
)

func TestPSD2QCStatementsMatchTheOBSample(t *testing.T) {
	t.Parallel()
	roles := testpki.PSD2Roles(t, "PSP_PI", "PSP_AI")
	cases := []struct {
		name string
		got  []byte
		want string
	}{
		{"profile encoding", testpki.PSD2QCStatements(t, roles, "Financial Conduct Authority", "GB-FCA").Value, "3078" + qcCompliance + obSample},
		{"flattened encoding", testpki.PSD2QCStatementsFlattened(t, roles, "Financial Conduct Authority", "GB-FCA").Value, "3076" + qcCompliance + obFlattened},
	}
	for _, c := range cases {
		if got := hex.EncodeToString(c.got); got != c.want {
			t.Errorf("%s\n got %s\nwant %s", c.name, got, c.want)
		}
	}
	ext := testpki.PSD2QCStatements(t, roles, "x", "y")
	if ext.Id.String() != "1.3.6.1.5.5.7.1.3" || ext.Critical {
		t.Errorf("extension %s critical %v", ext.Id, ext.Critical)
	}
}

func TestPSD2RolesOIDs(t *testing.T) {
	t.Parallel()
	var got []string
	for _, r := range testpki.PSD2Roles(t, "PSP_AS", "PSP_PI", "PSP_AI", "PSP_IC") {
		got = append(got, r.OID.String()+"="+r.Name)
	}
	want := "0.4.0.19495.1.1=PSP_AS 0.4.0.19495.1.2=PSP_PI 0.4.0.19495.1.3=PSP_AI 0.4.0.19495.1.4=PSP_IC"
	if strings.Join(got, " ") != want {
		t.Errorf("roles %v, want %s", got, want)
	}
}
