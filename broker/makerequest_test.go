package broker_test

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/brokerd/brokerd/internal/mockbank"
	"github.com/brokerd/brokerd/netstack/bank"
	"github.com/brokerd/brokerd/policy"
)

// bankStack is brokerd in-process with a mock bank on loopback. The client
// "agg" may use both QWACs for makeRequest to the bank (a literal loopback
// host, allowed explicitly) and, without private addresses, to any origin.
func bankStack(t testing.TB, opts stackOptions) (*stack, *http.Client) {
	t.Helper()
	if opts.bank == nil {
		opts.bank = mockbank.Start(t, mockbank.Options{})
	}
	if opts.outbound.UserAgent == "" {
		opts.outbound.UserAgent = "brokerd-test"
	}
	opts.rules = append(opts.rules,
		policy.Rule{Name: "agg-bank", CN: "agg", Keys: []string{"qwac.key", "qwac-ec.key"}, Ops: []string{"makeRequest"},
			Origins: []string{opts.bank.URL}, AllowPrivate: true},
		policy.Rule{Name: "agg-public", CN: "agg", Keys: []string{"*"}, Ops: []string{"makeRequest"}, Origins: []string{"*"}})
	s := newStack(t, opts)
	return s, s.clientFor(t, "agg")
}

type mrResult struct {
	Status      int        `json:"status"`
	Headers     [][]string `json:"headers"`
	Response    string     `json:"response"`
	Certificate *string    `json:"certificate"`
}

// mr posts a makeRequest with the given request fields (JSON members) and
// params members, returning the HTTP status, the result (on 200) and the
// raw body.
func mr(t testing.TB, s *stack, c *http.Client, request, params string) (int, mrResult, string) {
	t.Helper()
	body := `{"params":{"request":{` + request + `}` + params + `}}`
	status, out := post(t, c, s.url+"/makeRequest", body)
	var r struct {
		Result mrResult `json:"result"`
	}
	if status == 200 {
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("result %s: %v", out, err)
		}
	}
	return status, r.Result, out
}

func req(method, origin, path string, extra ...string) string {
	q, _ := json.Marshal(path)
	o, _ := json.Marshal(origin)
	return fmt.Sprintf(`"method":%q,"origin":%s,"path":%s`, method, o, q) + strings.Join(extra, "")
}

const withQWAC = `,"tls":{"cert_path":"qwac.crt","key_path":"qwac.key"}`

func echo(t *testing.T, r mrResult) mockbank.Echo {
	t.Helper()
	var e mockbank.Echo
	if err := json.Unmarshal([]byte(r.Response), &e); err != nil {
		t.Fatalf("echo %q: %v", r.Response, err)
	}
	return e
}

func header(h [][]string, name string) string {
	for _, kv := range h {
		if strings.EqualFold(kv[0], name) {
			return kv[1]
		}
	}
	return ""
}

func TestMakeRequestSendsWhatTheReferenceSends(t *testing.T) {
	t.Parallel()
	s, agg := bankStack(t, stackOptions{})
	b := s.bank
	status, r, raw := mr(t, s, agg, req("POST", b.URL, "/echo/a b/x%2fy/ä?x=1 2",
		`,"query":[["dateFrom","2026-01-01"],["q","a b"],["k","?/:@!$'()*,;+&="],["q","last"]]`,
		`,"headers":[["X-Request-ID","42"],["x-request-id","7"],["PSU-Name","Käyttäjä"],["Connection","close"],["Digest","SHA-256=abc"],["X-Request-ID","43"]]`,
		`,"body":"{\"amount\":\"12.50\"}"`, withQWAC), "")
	if status != 200 {
		t.Fatalf("%d %s", status, raw)
	}
	e := echo(t, r)
	if want := "/echo/a%20b/x%2Fy/%C3%A4?x=1+2&dateFrom=2026-01-01&q=last&k=?/:@!$'()*,%3B%2B%26%3D"; e.Target != want {
		t.Errorf("request target\n got %s\nwant %s", e.Target, want)
	}
	if e.Method != "POST" || e.Body != `{"amount":"12.50"}` || e.ClientCN != "qwac.key" {
		t.Errorf("method %s body %q client %q", e.Method, e.Body, e.ClientCN)
	}
	sent := map[string]string{}
	for _, kv := range e.Headers {
		sent[kv[0]] = kv[1]
	}
	for name, want := range map[string]string{
		"X-Request-ID": "43", "x-request-id": "7", "PSU-Name": "Käyttäjä", "Digest": "SHA-256=abc", // latin-1 bytes
		"Accept": "*/*", "Accept-Encoding": "gzip, deflate", "User-Agent": "brokerd-test", "Content-Type": "application/octet-stream",
		"Content-Length": "18", "Host": b.URL[len("https://"):],
	} {
		if got, ok := sent[name]; !ok || (want != "" && got != want) {
			t.Errorf("header %s: %q (sent: %v), want %q", name, got, ok, want)
		}
	}
	if _, ok := sent["Connection"]; ok && sent["Connection"] == "close" {
		t.Error("the hop-by-hop header Connection: close was forwarded")
	}
	if pemText := r.Certificate; pemText == nil || !strings.HasSuffix(*pemText, "-----END CERTIFICATE-----\n") {
		t.Fatalf("certificate %v", pemText)
	} else if block, _ := pem.Decode([]byte(*pemText)); block == nil || !b.Cert.Equal(mustParse(t, block.Bytes)) {
		t.Error("certificate is not the bank's leaf")
	}
}

func mustParse(t *testing.T, der []byte) *x509.Certificate {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestMakeRequestAnswers(t *testing.T) {
	t.Parallel()
	s, agg := bankStack(t, stackOptions{outbound: bank.Config{Timeout: 2 * time.Second, MaxBody: 1 << 20, MaxHeaderBytes: 32 << 10, MaxRedirects: 3}})
	b := s.bank
	cases := []struct {
		name, path, extra, params string
		status                    int    // HTTP status of brokerd's answer
		bankStatus                int    // result.status when 200
		response                  string // result.response, or a substring of the error body
	}{
		{"bank error is a result", "/status/418", "", "", 200, 418, `{"tppMessages":[{"category":"ERROR","code":"STATUS_418"}]}`},
		{"bank 500 is a result", "/status/500", "", "", 200, 500, "STATUS_500"},
		{"gzip", "/encoded?enc=gzip", "", "", 200, 200, `{"transactions":[{"amount":"12.50","currency":"EUR"}]}`},
		{"deflate (zlib)", "/encoded?enc=deflate", "", "", 200, 200, `{"transactions":[{"amount":"12.50","currency":"EUR"}]}`},
		{"deflate (raw)", "/encoded?enc=deflate-raw", "", "", 200, 200, `{"transactions":[{"amount":"12.50","currency":"EUR"}]}`},
		{"an encoding not asked for", "/encoded?enc=br", "", "", 502, 0, `"message":"Bad bank response"`},
		{"ZIP file", "/zip", "", "", 200, 200, "<statement>first</statement>"},
		{"latin-1 text", "/latin1", "", "", 200, 200, "Käyttö"},
		{"not UTF-8", "/binary", "", "", 502, 0, "not valid UTF-8"},
		{"redirect followed", "/redirect?to=/echo/after", "", "", 200, 200, `"target":"/echo/after"`},
		{"redirect not followed", "/redirect?to=/echo/after&code=307", "", `,"follow_redirects":false`, 200, 307, ""},
		{"null means not followed", "/redirect?to=/echo/after", "", `,"follow_redirects":null`, 200, 302, ""},
		{"cookies kept within the redirect chain", "/redirect?to=/echo/c&cookie=s1", "", "", 200, 200, `"session=s1"`},
		{"too many redirects", "/loop", "", "", 502, 0, `"message":"Too many redirects"`},
		{"timeout", "/slow?for=5s", "", "", 504, 0, `"message":"Bank timeout"`},
		{"body too large", "/big?n=2000000", "", "", 502, 0, `"message":"Bank response too large"`},
		{"headers too large", "/bigheader", "", "", 502, 0, `"message":"Bank response too large"`},
		{"RSA QWAC, TLS 1.2", "/echo/v", `,"tls":{"cert_path":"qwac.crt","key_path":"qwac.key","tls_version":"TLSv1_2"}`, "", 200, 200, `"client_cn":"qwac.key","tls_version":771`},
		{"RSA QWAC, TLS 1.3", "/echo/v", `,"tls":{"cert_path":"qwac.crt","key_path":"qwac.key","tls_version":"TLSv1_3"}`, "", 200, 200, `"client_cn":"qwac.key","tls_version":772`},
		{"P-256 QWAC, TLS 1.2", "/echo/v", `,"tls":{"cert_path":"qwac-ec.crt","key_path":"qwac-ec.key","tls_version":"TLSv1_2"}`, "", 200, 200, `"client_cn":"qwac-ec.key","tls_version":771`},
		{"P-256 QWAC, TLS 1.3", "/echo/v", `,"tls":{"cert_path":"qwac-ec.crt","key_path":"qwac-ec.key","tls_version":"TLSv1_3"}`, "", 200, 200, `"client_cn":"qwac-ec.key","tls_version":772`},
		{"unknown tls_version ignored", "/echo/v", `,"tls":{"cert_path":"qwac.crt","key_path":"qwac.key","tls_version":"SSLv3"}`, "", 200, 200, `"client_cn":"qwac.key"`},
		{"TLSv1 refused", "/echo/v", `,"tls":{"cert_path":"qwac.crt","key_path":"qwac.key","tls_version":"TLSv1"}`, "", 400,
			0, `{"code":400,"message":"TLS version refused","data":"TLSv1 is refused: banks must be reached with TLSv1_2 or TLSv1_3"}`},
		{"cert and key of two keys", "/echo/v", `,"tls":{"cert_path":"qwac-ec.crt","key_path":"qwac.key"}`, "", 400, 0, "name different keys"},
		{"no client certificate", "/echo/v", "", "", 502, 0, `"message":"Bank unreachable"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			extra := c.extra
			if extra == "" && c.name != "no client certificate" {
				extra = withQWAC
			}
			status, r, raw := mr(t, s, agg, req("GET", b.URL, c.path, extra), c.params)
			if status != c.status {
				t.Fatalf("status %d, want %d: %s", status, c.status, raw)
			}
			if status != 200 {
				if !strings.Contains(raw, c.response) {
					t.Fatalf("answer %s lacks %q", raw, c.response)
				}
				return
			}
			if r.Status != c.bankStatus || !strings.Contains(r.Response, c.response) {
				t.Fatalf("result status %d response %q; want %d, %q", r.Status, r.Response, c.bankStatus, c.response)
			}
			if c.bankStatus == 307 || c.bankStatus == 302 {
				if header(r.Headers, "Location") != "/echo/after" {
					t.Errorf("3xx without its Location: %v", r.Headers)
				}
			} else if header(r.Headers, "Location") != "" {
				t.Errorf("the headers of a redirect followed, not of the answer: %v", r.Headers)
			}
			if strings.HasPrefix(c.name, "gzip") && header(r.Headers, "Content-Encoding") != "gzip" {
				t.Errorf("Content-Encoding not returned: %v", r.Headers)
			}
		})
	}
	// Headers come back in wire order, with their case, repeats kept.
	_, r, _ := mr(t, s, agg, req("GET", b.URL, "/headers", withQWAC), "")
	want := [][]string{{"x-request-id", "abc"}, {"Set-Cookie", "a=1; Path=/"}, {"Content-Type", "application/json"},
		{"Set-Cookie", "b=2; Path=/"}, {"X-Mixed-CASE", "V"}, {"Content-Length", "11"}, {"Connection", "close"}}
	if fmt.Sprint(r.Headers) != fmt.Sprint(want) {
		t.Errorf("headers\n got %v\nwant %v", r.Headers, want)
	}
}

func TestMakeRequestRefusals(t *testing.T) {
	t.Parallel()
	s, agg := bankStack(t, stackOptions{})
	b := s.bank
	port := b.URL[strings.LastIndex(b.URL, ":")+1:]
	redirect := func(to string) string { return "/redirect?to=" + to }
	cases := []struct {
		name, origin, path, extra string
		c                         *http.Client
		status                    int
		want                      string
	}{
		{"loopback literal without permission", "https://127.0.0.2:" + port, "/", "", agg, 403, "loopback, private or link-local"},
		{"IPv6 loopback", "https://[::1]:" + port, "/", "", agg, 403, "loopback, private or link-local"},
		{"private range", "https://10.1.2.3", "/", "", agg, 403, "loopback, private or link-local"},
		{"link-local metadata", "http://169.254.169.254", "/latest/meta-data", "", agg, 403, "loopback, private or link-local"},
		{"a name resolving to loopback", "https://localhost:" + port, "/echo/x", "", agg, 403, "localhost is a loopback, private or link-local"},
		{"a name resolving to a private address", "https://evil.test", "/", "", agg, 403, "evil.test is a loopback, private or link-local"},
		{"redirect to a private address", b.URL, redirect("https://10.1.2.3/"), withQWAC, agg, 403, "loopback, private or link-local"},
		{"redirect to a name resolving to loopback", b.URL, redirect("https://bank.test:" + port + "/echo/x"), withQWAC, agg, 403, "bank.test is a loopback, private or link-local"},
		{"redirect to link-local", b.URL, redirect("http://169.254.169.254/"), withQWAC, agg, 403, "loopback, private or link-local"},
		{"QWAC for an origin its rule does not name", "https://evil.test", "/", withQWAC, agg, 403, "evil.test is a loopback, private or link-local"},
		{"client without a makeRequest rule", b.URL, "/echo/x", withQWAC, s.client, 403,
			`{"code":403,"message":"Forbidden","data":"client CN=bench may not makeRequest to ` + b.URL + ` with key \"qwac.key\""}`},
		{"unknown QWAC", b.URL, "/echo/x", `,"tls":{"cert_path":"nope.crt","key_path":"nope.key"}`, agg, 404,
			`{"code":404,"message":"Unknown key","data":"no key named \"nope.key\""}`},
		{"QWAC without certificate", b.URL, "/echo/x", `,"tls":{"cert_path":"rsa.key","key_path":"rsa.key"}`, agg, 400,
			`{"code":400,"message":"Bad request","data":"key \"rsa.key\" has no certificate: attach the QWAC with brokerd key cert"}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, _, raw := mr(t, s, c.c, req("GET", c.origin, c.path, c.extra), "")
			if status != c.status || !strings.Contains(raw, c.want) {
				t.Fatalf("%d %s\nwant %d containing %q", status, raw, c.status, c.want)
			}
			// A refusal names the host and the rule, never what a name
			// resolved to (that would map the LAN for the client).
			if host, _, ok := strings.Cut(c.want, " is a loopback"); ok && net.ParseIP(host) == nil &&
				(strings.Contains(raw, "127.0.0.1") || strings.Contains(raw, "10.1.2.3")) {
				t.Fatalf("the refusal tells the resolved address: %s", raw)
			}
		})
	}
	// Destination binding: bound to another origin, the QWAC cannot reach
	// the bank, even though the policy allows it.
	if _, err := s.keys.SetOrigins("qwac.key", []string{"https://api.other-bank.example"}); err != nil {
		t.Fatal(err)
	}
	status, _, raw := mr(t, s, agg, req("GET", b.URL, "/echo/x", withQWAC), "")
	if status != 403 || !strings.Contains(raw, `QWAC \"qwac.key\" is bound to other origins than `+b.URL) {
		t.Fatalf("bound QWAC: %d %s", status, raw)
	}
	// Bound to the bank, it cannot be redirected elsewhere.
	if _, err := s.keys.SetOrigins("qwac.key", []string{b.URL}); err != nil {
		t.Fatal(err)
	}
	if status, _, raw := mr(t, s, agg, req("GET", b.URL, "/echo/x", withQWAC), ""); status != 200 {
		t.Fatalf("bound QWAC to its origin: %d %s", status, raw)
	}
	status, _, raw = mr(t, s, agg, req("GET", b.URL, redirect("https://localhost:"+port+"/echo/x"), withQWAC), "")
	if status != 403 || !strings.Contains(raw, "bound to other origins") {
		t.Fatalf("redirect of a bound QWAC: %d %s", status, raw)
	}
}

func TestMakeRequestHeaderInjection(t *testing.T) {
	t.Parallel()
	s, agg := bankStack(t, stackOptions{})
	cases := []struct{ headers, want string }{
		{`[["X-A","b\r\nEvil: 1"]]`, `{"detail":[{"type":"value_error","loc":["body","params","request","headers",0,1],"msg":"Value error, Newline, carriage return or NUL detected in headers. Potential header injection attack.","input":"b\r\nEvil: 1","ctx":{"error":{}}}]}`},
		{`[["X-A\n","b"]]`, `"loc":["body","params","request","headers",0,0]`},
		{`[["X-A","\u0000"]]`, `Potential header injection attack.`},
		{`[["X A","b"]]`, `header name is not an HTTP token`},
		{`[["X-A","€"]]`, `header value cannot be encoded as latin-1`},
		{`[["X-A"]]`, `{"detail":[{"type":"missing","loc":["body","params","request","headers",0,1],"msg":"Field required","input":["X-A"]}]}`},
		{`[["X-A","b","c"]]`, `{"detail":[{"type":"too_long","loc":["body","params","request","headers",0],"msg":"Tuple should have at most 2 items after validation, not 3","input":["X-A","b","c"],"ctx":{"field_type":"Tuple","max_length":2,"actual_length":3}}]}`},
	}
	for _, c := range cases {
		status, _, raw := mr(t, s, agg, req("GET", s.bank.URL, "/echo/x", `,"headers":`+c.headers, withQWAC), "")
		if status != 422 || !strings.Contains(raw, c.want) {
			t.Errorf("headers %s: %d %s\nwant 422 containing %s", c.headers, status, raw, c.want)
		}
	}
}

func TestTrustAddTakesEffectWithoutRestart(t *testing.T) {
	t.Parallel()
	s, agg := bankStack(t, stackOptions{untrust: true})
	status, _, raw := mr(t, s, agg, req("GET", s.bank.URL, "/echo/x", withQWAC), "")
	if status != 502 || !strings.Contains(raw, `"message":"Untrusted bank certificate"`) || !strings.Contains(raw, "brokerd trust add") {
		t.Fatalf("untrusted bank: %d %s", status, raw)
	}
	// Scoped to another origin, the CA does not help.
	if _, err := bank.AddTrust(s.trustDir, []*x509.Certificate{s.bank.CA.Cert}, "https://api.other-bank.example:443"); err != nil {
		t.Fatal(err)
	}
	s.trustReloaded(t, trustsFor("https://api.other-bank.example:443"))
	if status, _, raw := mr(t, s, agg, req("GET", s.bank.URL, "/echo/x", withQWAC), ""); status != 502 {
		t.Fatalf("CA scoped to another origin: %d %s", status, raw)
	}
	if _, err := bank.AddTrust(s.trustDir, []*x509.Certificate{s.bank.CA.Cert}, s.bank.URL); err != nil {
		t.Fatal(err)
	}
	s.trustReloaded(t, trustsFor(s.bank.URL))
	if status, _, raw = mr(t, s, agg, req("GET", s.bank.URL, "/echo/x", withQWAC), ""); status != 200 {
		t.Fatalf("after trust add: %d %s", status, raw)
	}
}

// trustsFor holds when a CA is trusted for origin.
func trustsFor(origin string) func([]bank.TrustedCA) bool {
	return func(cas []bank.TrustedCA) bool {
		for _, ca := range cas {
			if ca.Origin == origin {
				return true
			}
		}
		return false
	}
}

func TestKeepAliveSparesHandshakes(t *testing.T) {
	t.Parallel()
	s, agg := bankStack(t, stackOptions{})
	for i := range 50 {
		if status, _, raw := mr(t, s, agg, req("GET", s.bank.URL, fmt.Sprintf("/echo/%d", i), withQWAC), ""); status != 200 {
			t.Fatalf("%d %s", status, raw)
		}
	}
	full, _ := s.out.Handshakes()
	bankFull, _ := s.bank.Handshakes()
	if full != 1 || bankFull != 1 {
		t.Fatalf("50 sequential calls made %d full handshakes (the bank saw %d); want 1", full, bankFull)
	}
	// A new connection resumes the session instead of signing again.
	s.out.CloseIdle()
	if status, _, raw := mr(t, s, agg, req("GET", s.bank.URL, "/echo/again", withQWAC), ""); status != 200 {
		t.Fatalf("%d %s", status, raw)
	}
	if full, resumed := s.out.Handshakes(); full != 1 || resumed != 1 {
		t.Fatalf("after closing idle connections: %d full, %d resumed handshakes; want 1 and 1", full, resumed)
	}
}
