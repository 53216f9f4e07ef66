package daemon_test

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/brokerd/brokerd/daemon"
	"github.com/brokerd/brokerd/internal/testpki"
	"github.com/brokerd/brokerd/tpm"
)

// apiDeployment is a daemon with a PKI of the test's, the reference key as
// qseal.key, an RSA-2048 key, a P-256 key with an alias and a key nobody
// may use, and a rule for the client agg-1.
func apiDeployment(t *testing.T, edit func(*fixture)) (*running, *tls.Certificate) {
	t.Helper()
	f := newFixture(t, true)
	s := f.state()
	importReference(t, s, "qseal.key")
	importRSA(t, s, "rsa.key")
	addKey(t, s, "ec.key", tpm.P256, "ec-alias")
	addKey(t, s, "denied.key", tpm.P256)
	s.Close()
	f.writePolicy(signRule("agg", "agg-1", "qseal.key", "rsa.key", "ec-alias"))
	if edit != nil {
		edit(f)
	}
	return f.start(daemon.Deps{}), f.byoClient("agg-1")
}

var internals = regexp.MustCompile(`/tmp/|/etc/|/var/|\.go:\d|goroutine |github\.com/|\*tpm\.|\*keys\.|panic|runtime\.`)

// noInternals fails when a response body shows file paths, Go type names
// or stack traces.
func noInternals(t *testing.T, body string) {
	t.Helper()
	if m := internals.FindString(body); m != "" {
		t.Errorf("response body shows internals (%q): %s", m, body)
	}
}

type apiCase struct {
	name, method, path, ct, body string
	anon                         bool // without a client certificate
	status                       int
	want                         string
}

// apiCases are answers of the API, byte for byte the reference broker's.
func apiCases(t *testing.T) []apiCase {
	t.Helper()
	vector, err := os.ReadFile("../testdata/reference/example.sig.rs-sha256.b64")
	if err != nil {
		t.Fatal(err)
	}
	const json = "application/json"
	const noCert = `{"code":403,"message":"Client certificate required","data":"this endpoint needs a client certificate issued by a CA the broker trusts"}`
	forbidden := func(key string) string {
		return `{"code":403,"message":"Forbidden","data":"client CN=agg-1 may not use key \"` + key + `\" for sign"}`
	}
	return []apiCase{
		{"root", "GET", "/", "", "", false, 200, `{"result":"eIDAS broker"}`},
		{"health without certificate", "GET", "/health", "", "", true, 200, `{"result":"ok"}`},
		{"health with certificate", "GET", "/health", "", "", false, 200, `{"result":"ok"}`},
		{"root without certificate", "GET", "/", "", "", true, 403, noCert},
		{"sign without certificate", "POST", "/sign", json, `{}`, true, 403, noCert},
		{"reference vector", "POST", "/sign", json, `{"params":{"data":"a string to sign","key_id":"qseal.key"}}`, false, 200,
			`{"result":"` + strings.TrimSpace(string(vector)) + `"}`},
		{"unknown path", "GET", "/nope", "", "", false, 404, `{"detail":"Not Found"}`},
		{"wrong method", "GET", "/sign", "", "", false, 405, `{"detail":"Method Not Allowed"}`},
		{"missing field", "POST", "/sign", json, `{"params":{"data":"x"}}`, false, 422,
			`{"detail":[{"type":"missing","loc":["body","params","key_id"],"msg":"Field required","input":{"data":"x"}}]}`},
		{"bad enum", "POST", "/sign", json, `{"params":{"data":"x","key_id":"qseal.key","hash_algorithm":"SHA1"}}`, false, 422,
			`{"detail":[{"type":"enum","loc":["body","params","hash_algorithm"],"msg":"Input should be 'SHA256' or 'SHA512'","input":"SHA1","ctx":{"expected":"'SHA256' or 'SHA512'"}}]}`},
		{"params missing", "POST", "/sign", json, `{}`, false, 422,
			`{"detail":[{"type":"missing","loc":["body","params"],"msg":"Field required","input":{}}]}`},
		{"empty body", "POST", "/sign", json, ``, false, 422,
			`{"detail":[{"type":"missing","loc":["body"],"msg":"Field required","input":null}]}`},
		{"malformed JSON", "POST", "/sign", json, `{"params":`, false, 422,
			`{"detail":[{"type":"json_invalid","loc":["body",10],"msg":"JSON decode error","input":{},"ctx":{"error":"Expecting value"}}]}`},
		{"not JSON", "POST", "/sign", "text/plain", `hello`, false, 422,
			`{"detail":[{"type":"model_attributes_type","loc":["body"],"msg":"Input should be a valid dictionary or object to extract fields from","input":"hello"}]}`},
		{"not UTF-8", "POST", "/sign", json, "{\"params\":\"\xff\"}", false, 400, `{"detail":"There was an error parsing the body"}`},
		{"unknown key", "POST", "/sign", json, `{"params":{"data":"x","key_id":"nope.key"}}`, false, 403, forbidden("nope.key")},
		{"key allowed through its alias", "POST", "/sign", json, `{"params":{"data":"x","key_id":"ec.key"}}`, false, 200, ""},
		{"key not allowed", "POST", "/sign", json, `{"params":{"data":"x","key_id":"denied.key"}}`, false, 403, forbidden("denied.key")},
		{"reserved key", "POST", "/sign", json, `{"params":{"data":"x","key_id":"brokerd:tls-server"}}`, false, 403, forbidden("brokerd:tls-server")},
		{"incompatible algorithm", "POST", "/sign", json, `{"params":{"data":"x","key_id":"rsa.key","crypto_algorithm":"ES"}}`, false, 400,
			`{"code":400,"message":"Algorithm incompatible with key","data":"Algorithm ES is incompatible with key type RSA"}`},
		{"incompatible algorithm EC", "POST", "/sign", json, `{"params":{"data":"x","key_id":"ec-alias","crypto_algorithm":"PS"}}`, false, 400,
			`{"code":400,"message":"Algorithm incompatible with key","data":"Algorithm PS is incompatible with key type EC P-256"}`},
		{"body too large", "POST", "/sign", json, strings.Repeat(" ", 1<<20+1), false, 413,
			`{"code":413,"message":"Request body too large","data":"the limit is 1048576 bytes"}`},
	}
}

// TestAPI: the daemon serves the API as the reference broker answers, the
// signatures and listings included, and logs the digest of what it signs,
// never the data or the signature.
func TestAPI(t *testing.T) {
	t.Parallel()
	r, agg := apiDeployment(t, nil)
	aggC, anon := r.f.client(agg), r.f.client(nil)
	for _, tc := range apiCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			c := aggC
			if tc.anon {
				c = anon
			}
			resp := do(t, c, tc.method, r.url(tc.path), tc.ct, tc.body)
			noInternals(t, resp.body)
			if resp.status != tc.status || (tc.want != "" && resp.body != tc.want) {
				t.Fatalf("%d %s\nwant %d %s", resp.status, resp.body, tc.status, tc.want)
			}
			if ct := resp.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if resp.header.Get("X-Request-Id") == "" {
				t.Error("no X-Request-Id")
			}
		})
	}
	t.Run("signatures and listings", func(t *testing.T) { testSignaturesAndListings(t, r, aggC) })
	t.Run("the log", func(t *testing.T) {
		vector, _ := os.ReadFile("../testdata/reference/example.sig.rs-sha256.b64")
		logs := r.logs.String()
		if strings.Contains(logs, "a string to sign") || strings.Contains(logs, strings.TrimSpace(string(vector))[:40]) {
			t.Error("the log holds request data or a signature")
		}
		if !strings.Contains(logs, "data_sha256=302094c5159753560a05077118a3df1d6d294c95a63d5b80a62f3a03461d6150") {
			t.Error("the log lacks the digest of the signed data")
		}
	})
}

// testSignaturesAndListings: Allow on 405, the trailing slash, ES through
// an alias, /keys and /openapi.json.
func testSignaturesAndListings(t *testing.T, r *running, agg *http.Client) {
	const json = "application/json"
	if resp := do(t, agg, "DELETE", r.url("/sign"), "", ""); resp.header.Get("Allow") != "POST" {
		t.Errorf("405 Allow header %q", resp.header.Get("Allow"))
	}
	if resp := do(t, agg, "POST", r.url("/sign/"), json, `{}`); resp.status != 200 && resp.status != 422 {
		t.Errorf("trailing slash: %d %s (the redirect should lead to /sign)", resp.status, resp.body)
	}
	// ES is raw r||s of 64 bytes for P-256, through an alias.
	resp := do(t, agg, "POST", r.url("/sign"), json, `{"params":{"data":"x","key_id":"ec-alias","hash_algorithm":"SHA512"}}`)
	var sig string
	fmt.Sscanf(resp.body, `{"result":%q}`, &sig)
	if raw, err := base64.StdEncoding.DecodeString(sig); resp.status != 200 || err != nil || len(raw) != 64 {
		t.Fatalf("ES through the alias: %d %s", resp.status, resp.body)
	}
	// Only the keys the client may use are listed, with their thumbprints.
	resp = do(t, agg, "GET", r.url("/keys"), "", "")
	if resp.status != 200 || !strings.Contains(resp.body, `"id":"qseal.key"`) || !strings.Contains(resp.body, `"id":"ec.key"`) ||
		strings.Contains(resp.body, "brokerd:tls-server") {
		t.Fatalf("/keys: %d %s", resp.status, resp.body)
	}
	resp = do(t, agg, "GET", r.url("/openapi.json"), "", "")
	if resp.status != 200 || !strings.Contains(resp.body, `"enum": [
          "RS",
          "PS",
          "ES"`) || !strings.Contains(resp.body, `"/keys"`) {
		t.Fatalf("/openapi.json: %d %.200s", resp.status, resp.body)
	}
}

// TestClientCertificatesRefused: certificates of another CA, expired, not
// yet valid or for servers only fail the handshake; a valid client no rule
// names gets 403.
func TestClientCertificatesRefused(t *testing.T) {
	t.Parallel()
	r, _ := apiDeployment(t, nil)
	f := r.f
	other := testpki.NewCA(t, "Other CA")
	leaf := func(issuer *testpki.CA, l testpki.Leaf) *http.Client {
		l.Subject = pkix.Name{CommonName: "agg-1"} // the name policy allows
		cert, key := issuer.IssueKey(t, l)
		return f.client(&tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key})
	}
	clientAuth := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	cases := map[string]*http.Client{
		"wrong CA":      leaf(other, testpki.Leaf{ExtUsage: clientAuth}),
		"expired":       leaf(f.ca, testpki.Leaf{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour), ExtUsage: clientAuth}),
		"not yet valid": leaf(f.ca, testpki.Leaf{NotBefore: time.Now().Add(24 * time.Hour), NotAfter: time.Now().Add(48 * time.Hour), ExtUsage: clientAuth}),
		"server-only":   leaf(f.ca, testpki.Leaf{ExtUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}),
	}
	for name, cl := range cases {
		resp, err := cl.Post(r.url("/sign"), "application/json", strings.NewReader(`{"params":{"data":"x","key_id":"qseal.key"}}`))
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			t.Errorf("%s: got %d %s, want a refused handshake", name, resp.StatusCode, body)
			continue
		}
		if !strings.Contains(err.Error(), "certificate") {
			t.Errorf("%s: %v, want a TLS certificate error", name, err)
		}
	}
	resp := sign(t, f.client(f.byoClient("stranger")), r, "qseal.key")
	if resp.status != 403 || resp.body != `{"code":403,"message":"Forbidden","data":"client CN=stranger may not use key \"qseal.key\" for sign"}` {
		t.Errorf("stranger: %d %s", resp.status, resp.body)
	}
}
