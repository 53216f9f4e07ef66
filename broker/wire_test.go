package broker

import (
	"crypto"
	"strings"
	"testing"

	"github.com/brokerd/brokerd/keys"
)

// Every 422 of the reference's /sign, byte for byte (COMPAT.md section 2).
func TestParseSignErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, ct, body, want string
	}{
		{"missing field", "application/json", `{"params":{"data":"x"}}`,
			`{"detail":[{"type":"missing","loc":["body","params","key_id"],"msg":"Field required","input":{"data":"x"}}]}`},
		{"both fields missing, extra field echoed", "", `{"params":{"hash_algorithm":null,"ca_cert_path":"x"}}`,
			`{"detail":[{"type":"missing","loc":["body","params","data"],"msg":"Field required","input":{"hash_algorithm":null,"ca_cert_path":"x"}},{"type":"missing","loc":["body","params","key_id"],"msg":"Field required","input":{"hash_algorithm":null,"ca_cert_path":"x"}}]}`},
		{"bad hash enum", "application/json", `{"params":{"data":"x","key_id":"k","hash_algorithm":"SHA1"}}`,
			`{"detail":[{"type":"enum","loc":["body","params","hash_algorithm"],"msg":"Input should be 'SHA256' or 'SHA512'","input":"SHA1","ctx":{"expected":"'SHA256' or 'SHA512'"}}]}`},
		{"bad crypto enum", "application/json", `{"params":{"data":"x","key_id":"k","crypto_algorithm":"EdDSA"}}`,
			`{"detail":[{"type":"enum","loc":["body","params","crypto_algorithm"],"msg":"Input should be 'RS', 'PS' or 'ES'","input":"EdDSA","ctx":{"expected":"'RS', 'PS' or 'ES'"}}]}`},
		{"enum given a number", "application/json", `{"params":{"data":"x","key_id":"k","crypto_algorithm":1.50}}`,
			`{"detail":[{"type":"enum","loc":["body","params","crypto_algorithm"],"msg":"Input should be 'RS', 'PS' or 'ES'","input":1.5,"ctx":{"expected":"'RS', 'PS' or 'ES'"}}]}`},
		{"params missing", "application/json", `{}`,
			`{"detail":[{"type":"missing","loc":["body","params"],"msg":"Field required","input":{}}]}`},
		{"empty body", "application/json", ``,
			`{"detail":[{"type":"missing","loc":["body"],"msg":"Field required","input":null}]}`},
		{"null body", "application/json", `null`,
			`{"detail":[{"type":"missing","loc":["body"],"msg":"Field required","input":null}]}`},
		{"malformed JSON", "application/json", `{"params": {"data": "x",}}`,
			`{"detail":[{"type":"json_invalid","loc":["body",23],"msg":"JSON decode error","input":{},"ctx":{"error":"Illegal trailing comma before end of object"}}]}`},
		{"whitespace body", "application/json; charset=utf-8", " \n",
			`{"detail":[{"type":"json_invalid","loc":["body",2],"msg":"JSON decode error","input":{},"ctx":{"error":"Expecting value"}}]}`},
		{"non-JSON content type", "text/plain", `{"params":{}}`,
			`{"detail":[{"type":"model_attributes_type","loc":["body"],"msg":"Input should be a valid dictionary or object to extract fields from","input":"{\"params\":{}}"}]}`},
		{"form content type", "application/x-www-form-urlencoded", `data=x`,
			`{"detail":[{"type":"model_attributes_type","loc":["body"],"msg":"Input should be a valid dictionary or object to extract fields from","input":"data=x"}]}`},
		{"body is a list", "application/vnd.api+json", `[1]`,
			`{"detail":[{"type":"model_attributes_type","loc":["body"],"msg":"Input should be a valid dictionary or object to extract fields from","input":[1]}]}`},
		{"params is a string", "", `{"params":"x"}`,
			`{"detail":[{"type":"model_attributes_type","loc":["body","params"],"msg":"Input should be a valid dictionary or object to extract fields from","input":"x"}]}`},
		{"data is a number", "application/json", `{"params":{"data":5,"key_id":null}}`,
			`{"detail":[{"type":"string_type","loc":["body","params","data"],"msg":"Input should be a valid string","input":5},{"type":"string_type","loc":["body","params","key_id"],"msg":"Input should be a valid string","input":null}]}`},
		{"non-ASCII echoed raw", "application/json", "{\"params\":{\"data\":\"ä\u2028\",\"key_id\":[\"<k>&\"]}}",
			"{\"detail\":[{\"type\":\"string_type\",\"loc\":[\"body\",\"params\",\"key_id\"],\"msg\":\"Input should be a valid string\",\"input\":[\"<k>&\"]}]}"},
	}
	for _, c := range cases {
		_, verrs, err := parseSign([]byte(c.body), c.ct)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if got := string(verrs.encode()); got != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.name, got, c.want)
		}
	}
}

func TestParseSignDefaults(t *testing.T) {
	t.Parallel()
	cases := []struct {
		body string
		want signParams
	}{
		{`{"params":{"data":"a string to sign","key_id":"qseal.key"}}`, signParams{Data: "a string to sign", KeyID: "qseal.key", Hash: crypto.SHA256}},
		{`{"params":{"data":"","key_id":"k","hash_algorithm":null,"crypto_algorithm":null},"extra":1}`, signParams{KeyID: "k", Hash: crypto.SHA256}},
		{`{"params":{"data":"\u00e4","key_id":"k","hash_algorithm":"SHA512","crypto_algorithm":"PS"}}`, signParams{Data: "ä", KeyID: "k", Hash: crypto.SHA512, Alg: keys.PS}},
		{`{"params":{"data":"x","key_id":"k","crypto_algorithm":"ES"}}`, signParams{Data: "x", KeyID: "k", Hash: crypto.SHA256, Alg: keys.ES}},
	}
	for _, c := range cases {
		p, verrs, err := parseSign([]byte(c.body), "application/json")
		if err != nil || verrs != nil || p != c.want {
			t.Errorf("parseSign(%s) = %+v, %s, %v", c.body, p, verrs.encode(), err)
		}
	}
	if _, _, err := parseSign([]byte("{\"params\":\xff}"), ""); err != errNotUTF8 {
		t.Errorf("invalid UTF-8: %v", err)
	}
}

// FuzzParseSign: no input makes the decoder panic; every answer is either
// valid params or a 422 body that is valid JSON with at least one entry.
func FuzzParseSign(f *testing.F) {
	for _, s := range []string{``, `{}`, `{"params":{"data":"x","key_id":"k"}}`, `{"params":{"data":"\ud800","key_id":[1,{"a":-0.0e-5}]}}`,
		`[`, `{"a":1,}`, `"\u12`, `NaN`, `1e400`, "\xef\xbb\xbf{}", `{"params":{"hash_algorithm":"SHA1","crypto_algorithm":{}}}`} {
		f.Add([]byte(s), "application/json")
	}
	f.Add([]byte("x"), "text/plain")
	f.Fuzz(func(t *testing.T, body []byte, ct string) {
		p, verrs, err := parseSign(body, ct)
		if checkDecoded(t, verrs, err) && p.Hash != crypto.SHA256 && p.Hash != crypto.SHA512 {
			t.Fatalf("accepted with hash %v", p.Hash)
		}
	})
}

// FuzzParseMakeRequest: the makeRequest decoder never panics, and every
// 422 body is valid JSON.
func FuzzParseMakeRequest(f *testing.F) {
	for _, s := range []string{`{"params":{"request":{"method":"GET","origin":"https://a","path":"/","query":[["a","b"]],"headers":[["X","y"]],"body":"","tls":{"cert_path":"c","key_path":"k","tls_version":"TLSv1_3"}},"follow_redirects":"yes"}}`,
		`{"params":{"request":{"headers":[["a"],["a","b","c"],[1,2],"x"],"query":{}},"follow_redirects":[]}}`,
		`{"params":{"request":{"method":"GET","origin":"x","path":"y","headers":[["X\r","\u0000€"]],"tls":null},"follow_redirects":null}}`} {
		f.Add([]byte(s), "application/json")
	}
	f.Fuzz(func(t *testing.T, body []byte, ct string) {
		p, verrs, err := parseMakeRequest(body, ct)
		if checkDecoded(t, verrs, err) {
			for _, h := range p.Headers {
				if strings.ContainsAny(h[0]+h[1], "\r\n\x00") {
					t.Fatalf("accepted header %q", h)
				}
			}
		}
	})
}
