package broker

import "testing"

// Expectations from yarl's quoters (COMPAT.md section 4, yarl 1.8 and HEAD).
func TestBankURL(t *testing.T) {
	t.Parallel()
	cases := []struct {
		origin, path string
		query        [][2]string
		want         string // the request target
	}{
		{"https://api.bank", "/a b/c", nil, "/a%20b/c"},
		{"https://api.bank", "/x%2fy", nil, "/x%2Fy"},
		{"https://api.bank", "/x%41y", nil, "/xAy"},
		{"https://api.bank", "/ä", nil, "/%C3%A4"},
		{"https://api.bank", "/a+b;c=d&e", nil, "/a+b;c=d&e"},
		{"https://api.bank", "/v1/x?a b=%2f&c=d;e", nil, "/v1/x?a+b=/&c=d;e"},
		{"https://api.bank", "", nil, "/"},
		{"https://API.Bank:8443", "/p", nil, "/p"},
		{"https://api.bank", "/p%", nil, "/p%25"},
		{"https://api.bank", "/p%zz", nil, "/p%25zz"},
		{"https://api.bank", "/p#frag", nil, "/p"},
		{"https://api.bank", "/accounts", [][2]string{{"dateFrom", "2026-01-01"}, {"q", "a b"}}, "/accounts?dateFrom=2026-01-01&q=a+b"},
		{"https://api.bank", "/p", [][2]string{{"k", "?/:@!$'()*,"}}, "/p?k=?/:@!$'()*,"},
		{"https://api.bank", "/p", [][2]string{{"k", ";+&=%"}}, "/p?k=%3B%2B%26%3D%25"},
		{"https://api.bank", "/p", [][2]string{{"a", "1"}, {"b", "2"}, {"a", "3"}}, "/p?a=3&b=2"},
		{"https://api.bank", "/p?x=1", [][2]string{{"y", "ä"}}, "/p?x=1&y=%C3%A4"},
		{"https://api.bank", "/p?x=1&", [][2]string{{"y", "2"}}, "/p?x=1&y=2"},
	}
	for _, c := range cases {
		u, err := bankURL(c.origin, c.path, c.query)
		if err != nil {
			t.Errorf("%s%s: %v", c.origin, c.path, err)
			continue
		}
		if got := u.RequestURI(); got != c.want {
			t.Errorf("%s%s %v: target %q, want %q", c.origin, c.path, c.query, got, c.want)
		}
	}
	if u, _ := bankURL("https://API.Bank:8443", "/p", nil); u.Host != "api.bank:8443" {
		t.Errorf("host %q", u.Host)
	}
	for _, bad := range []string{"ftp://x", "api.bank", "https://", "https://user@api.bank"} {
		if _, err := bankURL(bad, "/", nil); err == nil {
			t.Errorf("bankURL(%q) accepted", bad)
		}
	}
}
