package broker_test

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/brokerd/brokerd/internal/mockbank"
)

// exampleSigningString is the NextGenPSD2 signing string of the example
// request below, written out by hand: an empty body's digest, then the
// example X-Request-ID, PSU-ID, TPP-Redirect-URI and Date.
const exampleSigningString = "digest: SHA-256=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n" +
	"x-request-id: 99391c7e-ad88-49ec-a2ad-99ddcb1f7721\n" +
	"psu-id: PSU-1234\n" +
	"tpp-redirect-uri: https://www.tpp.com/cb\n" +
	"date: Sun, 06 Nov 1994 08:49:37 GMT"

const exampleHeaders = `[["X-Request-ID","99391c7e-ad88-49ec-a2ad-99ddcb1f7721"],["PSU-ID","PSU-1234"],["TPP-Redirect-URI","https://www.tpp.com/cb"],["Date","Sun, 06 Nov 1994 08:49:37 GMT"]]`

// TestHTTPSigEndpoint: POST /httpsig with the TPM-held RSA QSealC gives
// the request's headers plus Digest, Signature (keyId from the
// certificate, the signature verified here over the hand-written signing
// string) and TPP-Signature-Certificate; the call is on record with the
// digest of what was signed.
func TestHTTPSigEndpoint(t *testing.T) {
	t.Parallel()
	s, c := helperStack(t)
	leaf := leafOf(t, s, "seal.key")
	seq, _ := s.log.Head()
	status, body := post(t, c, s.url+"/httpsig", `{"params":{"key_id":"seal.key","method":"POST","path":"/v1/payments/sepa-credit-transfers?x=1","headers":`+exampleHeaders+`}}`)
	var res struct {
		Result struct {
			Headers [][2]string `json:"headers"`
		} `json:"result"`
	}
	if status != 200 || json.Unmarshal([]byte(body), &res) != nil {
		t.Fatalf("%d %s", status, body)
	}
	h := res.Result.Headers
	keyID := "SN=" + strings.ToUpper(leaf.SerialNumber.Text(16)) + ",CA=CN=Test%20QTSP,O=brokerd%20tests"
	sigRE := regexp.MustCompile(`^keyId="` + regexp.QuoteMeta(keyID) + `",algorithm="rsa-sha256",headers="digest x-request-id psu-id tpp-redirect-uri date",signature="([A-Za-z0-9+/=]+)"$`)
	if len(h) != 7 || h[4] != [2]string{"Digest", "SHA-256=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="} || h[5][0] != "Signature" ||
		!sigRE.MatchString(h[5][1]) || h[6] != [2]string{"TPP-Signature-Certificate", base64.StdEncoding.EncodeToString(leaf.Raw)} {
		t.Fatalf("headers %q\nwant Signature matching %s", h, sigRE)
	}
	sig, _ := base64.StdEncoding.DecodeString(sigRE.FindStringSubmatch(h[5][1])[1])
	sum := sha256.Sum256([]byte(exampleSigningString))
	if err := rsa.VerifyPKCS1v15(leaf.PublicKey.(*rsa.PublicKey), crypto.SHA256, sum[:], sig); err != nil {
		t.Errorf("signature over the example signing string: %v", err)
	}
	recs := records(t, s, seq)
	if len(recs) != 1 || recs[0].Op != "httpsig" || recs[0].KeyID != "seal.key" || recs[0].Alg != "rsa-sha256" || recs[0].Status != 200 ||
		recs[0].DataSHA256 != sha(exampleSigningString) || recs[0].Target != "POST /v1/payments/sepa-credit-transfers" ||
		recs[0].Detail != "headers digest x-request-id psu-id tpp-redirect-uri date" {
		t.Errorf("records %+v", recs)
	}
}

// TestHTTPSigRefusals: each refusal of /httpsig, exactly, on record.
func TestHTTPSigRefusals(t *testing.T) {
	t.Parallel()
	s, tpp := helperStack(t)
	for _, tc := range []struct {
		name, params string
		c            *http.Client
		status       int
		want, key    string
	}{
		{"EC key", `"key_id":"seal-ec.key","method":"GET","path":"/"`, tpp, 400,
			`{"code":400,"message":"Cannot sign as asked","data":"Berlin Group signatures need an RSA QSealC (rsa-sha256 or rsa-sha512); this key is ECDSA"}`, "seal-ec.key"},
		{"QWAC", `"key_id":"qwac.key","method":"GET","path":"/"`, tpp, 403,
			`{"code":403,"message":"Key not for signing","data":"key \"qwac.key\" is a QWAC (purpose qwac): it authenticates brokerd to banks in makeRequest and signs nothing; use a QSealC"}`, "qwac.key"},
		{"policy", `"key_id":"seal.key","method":"GET","path":"/"`, s.client, 403,
			`{"code":403,"message":"Forbidden","data":"client CN=bench may not use key \"seal.key\" for httpsig"}`, "seal.key"},
		{"expired", `"key_id":"old.key","method":"GET","path":"/"`, tpp, 403,
			`{"code":403,"message":"Certificate expired","data":"the certificate of key \"old.key\" expired on 2025-01-01T00:00:00Z: attach a renewed one (brokerd key cert)"}`, "old.key"},
		{"unknown key", `"key_id":"nope","method":"GET","path":"/"`, tpp, 404,
			`{"code":404,"message":"Unknown key","data":"no key named \"nope\""}`, "nope"},
		{"signed header absent", `"key_id":"seal.key","method":"GET","path":"/","signed_headers":["digest","x-request-id","psu-id"]`, tpp, 400,
			`{"code":400,"message":"Cannot sign as asked","data":"header psu-id is to be signed but is not in the request"}`, "seal.key"},
		{"Signature given", `"key_id":"seal.key","method":"GET","path":"/","headers":[["Signature","x"]]`, tpp, 400,
			`{"code":400,"message":"Cannot sign as asked","data":"header Signature is brokerd's to set"}`, "seal.key"},
		{"malformed", `"key_id":"seal.key","path":"/","signed_headers":"digest","headers":[["a b","c"]]`, tpp, 422,
			`{"detail":[{"type":"missing","loc":["body","params","method"],"msg":"Field required","input":{"key_id":"seal.key","path":"/","signed_headers":"digest","headers":[["a b","c"]]}},` +
				`{"type":"value_error","loc":["body","params","headers",0,0],"msg":"Value error, header name is not an HTTP token","input":"a b","ctx":{"error":{}}},` +
				`{"type":"list_type","loc":["body","params","signed_headers"],"msg":"Input should be a valid list","input":"digest"}]}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seq, _ := s.log.Head()
			status, got := post(t, tc.c, s.url+"/httpsig", `{"params":{`+tc.params+`}}`)
			if status != tc.status || got != tc.want {
				t.Errorf("%d %s\nwant %d %s", status, got, tc.status, tc.want)
			}
			if recs := records(t, s, seq); len(recs) != 1 || recs[0].Op != "httpsig" || recs[0].Status != tc.status || recs[0].KeyID != tc.key {
				t.Errorf("records %+v", recs)
			}
		})
	}
}

// TestMakeRequestBerlinGroupSigning: makeRequest with the sign option
// reaches the mock bank over mutual TLS with the QWAC, and the bank,
// recomputing the Digest over the body it received and rebuilding the
// signing string from the raw request line and headers, verifies the
// QSealC's signature. The signature, then the call, are on record.
func TestMakeRequestBerlinGroupSigning(t *testing.T) {
	t.Parallel()
	s, tpp := helperStack(t)
	b := s.bank
	bodyJSON := `,"body":"{\"amount\":\"1.00\"}","headers":[["PSU-ID","PSU-1"],["Content-Type","application/json"]]`
	for _, tc := range []struct {
		name, sign string
		signed     []string
		first      string
	}{
		{"request target", `{"key_id":"seal.key","scheme":"berlin-group","request_target":true}`,
			[]string{"(request-target)", "digest", "x-request-id", "psu-id", "date"}, "(request-target): post /bg/payments?iban=FI00+1&note=a/b"},
		{"SHA-512, chosen headers", `{"key_id":"seal.crt","scheme":"berlin-group","hash_algorithm":"SHA512","signed_headers":["Content-Type","Digest","X-Request-ID"]}`,
			[]string{"content-type", "digest", "x-request-id"}, "content-type: application/json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seq, _ := s.log.Head()
			status, r, raw := mr(t, s, tpp, req("POST", b.URL, "/bg/payments?iban=FI00 1&note=a%2fb", bodyJSON, withQWAC, `,"sign":`+tc.sign), "")
			var v mockbank.Verdict
			if status != 200 || json.Unmarshal([]byte(r.Response), &v) != nil {
				t.Fatalf("%d %s", status, raw)
			}
			if r.Status != 200 || !v.Verified || strings.Join(v.Signed, " ") != strings.Join(tc.signed, " ") || v.ClientCN != "qwac.key" ||
				!strings.HasPrefix(v.SigningString, tc.first+"\n") {
				t.Errorf("bank: %d %+v", r.Status, v)
			}
			recs := records(t, s, seq)
			if len(recs) != 3 || recs[0].Op != "httpsig" || recs[0].KeyID != "seal.key" || recs[0].DataSHA256 != sha(v.SigningString) ||
				recs[0].Target != "POST "+b.URL+"/bg/payments" || recs[1].Op != "makeRequest.start" || recs[1].KeyID != "qwac.key" || recs[2].Op != "makeRequest" {
				t.Errorf("records %+v", recs)
			}
		})
	}
	// The bank's check is real: a Digest that is not the body's fails it.
	_, r, _ := mr(t, s, tpp, req("POST", b.URL, "/bg/x", `,"body":"x","headers":[["Digest","SHA-256=AAAA"],["Signature","keyId=\"a\""]]`, withQWAC), "")
	if !strings.Contains(r.Response, `"verified":false,"reason":"digest \"SHA-256=AAAA\" is not the received body's"`) || r.Status != 400 {
		t.Errorf("bank accepted a wrong digest: %d %s", r.Status, r.Response)
	}
}

// TestMakeRequestSignRefusals: a sign option the client may not use, or
// with a key that signs nothing, stops the call before the bank hears of
// it.
func TestMakeRequestSignRefusals(t *testing.T) {
	t.Parallel()
	s, tpp := helperStack(t)
	agg := s.clientFor(t, "agg")
	b := s.bank
	for _, tc := range []struct {
		name, sign string
		c          *http.Client
		status     int
		want       string
	}{
		{"QWAC signs nothing", `{"key_id":"qwac-ec.key","scheme":"berlin-group"}`, tpp, 403,
			`{"code":403,"message":"Key not for signing","data":"key \"qwac-ec.key\" is a QWAC (purpose qwac): it authenticates brokerd to banks in makeRequest and signs nothing; use a QSealC"}`},
		{"policy", `{"key_id":"seal.key","scheme":"berlin-group"}`, agg, 403,
			`{"code":403,"message":"Forbidden","data":"client CN=agg may not use key \"seal.key\" for httpsig"}`},
		{"scheme", `{"key_id":"seal.key","scheme":"stet"}`, tpp, 422,
			`{"detail":[{"type":"enum","loc":["body","params","request","sign","scheme"],"msg":"Input should be 'berlin-group'","input":"stet","ctx":{"expected":"'berlin-group'"}}]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := b.Requests()
			status, _, raw := mr(t, s, tc.c, req("POST", b.URL, "/bg/x", withQWAC, `,"sign":`+tc.sign), "")
			if status != tc.status || raw != tc.want {
				t.Errorf("%d %s\nwant %d %s", status, raw, tc.status, tc.want)
			}
			if b.Requests() != before {
				t.Error("the bank got the request")
			}
		})
	}
}
