package broker

import (
	"crypto"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/brokerd/brokerd/jws"
)

// checkDecoded fails the fuzz run when a decoder's outcome is neither
// accepted params nor a well-formed 400 or 422.
func checkDecoded(t *testing.T, verrs validationErrors, err error) bool {
	t.Helper()
	switch {
	case err != nil:
		if err != errNotUTF8 {
			t.Fatalf("unexpected error %v", err)
		}
		return false
	case verrs != nil:
		out := verrs.encode()
		var doc struct {
			Detail []map[string]any `json:"detail"`
		}
		if !utf8.Valid(out) || json.Unmarshal(out, &doc) != nil || len(doc.Detail) == 0 {
			t.Fatalf("422 body is not valid: %q", out)
		}
		return false
	}
	return true
}

// FuzzParseHelpers: the decoders of /jws, /jws/verify, /clientAssertion,
// /httpsig and makeRequest's sign option never panic, every 422 is valid JSON, and what they accept
// holds: a known profile, header claims that are plain JSON, a JWKS
// that is a JSON object.
func FuzzParseHelpers(f *testing.F) {
	for _, s := range []string{
		`{"params":{"key_id":"k","payload":"p","profile":"ob-3.1.3","header":{"a":[1,{"b":NaN}],"kid":"x"},"x5c":"yes"}}`,
		`{"params":{"jws":"a..b","payload":null,"certificate":"-----BEGIN","jwks":{"keys":[]}}}`,
		`{"params":{"key_id":"k","client_id":"c","audience":"a","lifetime_s":1.5}}`,

		`{"params":{"key_id":"k","method":"POST","path":"/p?q","headers":[["Date","x"],["a b","c\r"]],"body":"","signed_headers":["digest",1],"request_target":1}}`,
		`{"params":{"request":{"method":"GET","origin":"o","path":"/","sign":{"key_id":"k","scheme":"berlin-group","signed_headers":null}}}}`,
		`{"params":{"header":Infinity,"lifetime_s":"99999999999999999999"}}`, `[`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if p, verrs, err := parseJWS(body, "application/json"); checkDecoded(t, verrs, err) {
			if !slices.Contains(jws.Profiles, p.Profile) {
				t.Fatalf("accepted profile %q", p.Profile)
			}
			for k, v := range p.Header {
				if !json.Valid(v) {
					t.Fatalf("accepted claim %q = %s", k, v)
				}
			}
		}
		if p, verrs, err := parseJWSVerify(body, "application/json"); checkDecoded(t, verrs, err) && p.JWKS != nil {
			var m map[string]any
			if json.Unmarshal(p.JWKS, &m) != nil {
				t.Fatalf("accepted jwks %s", p.JWKS)
			}
		}
		parseAssertionChecked(t, body)
		if p, verrs, err := parseHTTPSig(body, "application/json"); checkDecoded(t, verrs, err) {
			for _, h := range p.Headers {
				if !isToken(h[0]) || strings.ContainsAny(h[1], "\r\n\x00") {
					t.Fatalf("accepted header %q", h)
				}
			}
		}
		if p, verrs, err := parseMakeRequest(body, "application/json"); checkDecoded(t, verrs, err) && p.Sign != nil &&
			p.Sign.Hash != crypto.SHA256 && p.Sign.Hash != crypto.SHA512 {
			t.Fatalf("accepted a sign option with hash %v", p.Sign.Hash)
		}
	})
}

func parseAssertionChecked(t *testing.T, body []byte) {
	_, verrs, err := parseClientAssertion(body, "application/json")
	checkDecoded(t, verrs, err)
}
