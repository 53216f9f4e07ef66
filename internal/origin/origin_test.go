package origin_test

import (
	"testing"

	"github.com/brokerd/brokerd/internal/origin"
)

func TestParseAndMatch(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"https://API.Bank.example": "https://api.bank.example:443", "http://bank:8080": "http://bank:8080",
		"https://[::1]:8443/": "https://[::1]:8443", "https://*.psd2.example": "https://*.psd2.example:443",
	} {
		o, err := origin.Parse(in)
		if err != nil || o.String() != want {
			t.Errorf("Parse(%q) = %v, %v; want %s", in, o, err, want)
		}
	}
	for _, bad := range []string{"", "ftp://x", "https://", "https://x/path", "https://u@x", "https://x?q", "x.example"} {
		if _, err := origin.Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
	patterns, err := origin.Normalize([]string{"https://*.psd2.example", "https://api.bank.example"})
	if err != nil {
		t.Fatal(err)
	}
	for in, want := range map[string]bool{
		"https://a.psd2.example": true, "https://a.b.psd2.example": true, "https://psd2.example": false,
		"http://a.psd2.example": false, "https://a.psd2.example:8443": false, "https://api.bank.example:443": true,
	} {
		o, _ := origin.Parse(in)
		if got := origin.AnyMatches(patterns, o); got != want {
			t.Errorf("AnyMatches(%s) = %v, want %v", in, got, want)
		}
	}
	if any, _ := origin.Parse("https://x.example"); !origin.AnyMatches([]string{"*"}, any) {
		t.Error(`"*" does not match`)
	}
	if _, err := origin.Normalize([]string{"nope"}); err == nil {
		t.Error("Normalize accepted a bad origin")
	}
}
