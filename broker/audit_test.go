package broker_test

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/brokerd/brokerd/audit"
	"github.com/brokerd/brokerd/broker"
	"github.com/brokerd/brokerd/store"
)

func sha(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// records returns the audit records appended since seq.
func records(t *testing.T, s *stack, after uint64) []audit.Record {
	t.Helper()
	var out []audit.Record
	if err := s.log.Records(time.Time{}, time.Time{}, func(r audit.Record, _ []byte) error {
		if r.Seq > after {
			out = append(out, r)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestAuditRecordsEveryOperation: each answer, allowed or refused, has its
// record, with who asked, the key, the data's SHA-256 and the outcome; a
// bank call has a record of its intent before it leaves.
func TestAuditRecordsEveryOperation(t *testing.T) {
	t.Parallel()
	s, agg := bankStack(t, stackOptions{})
	b := s.bank
	port := b.URL[strings.LastIndex(b.URL, ":")+1:]
	type want struct{ op, key, alg, data, target, client, errPart string }
	cases := []struct {
		name   string
		do     func() (int, http.Header)
		status int
		want   []want
	}{
		{"sign", func() (int, http.Header) {
			return postH(t, s.client, s.url+"/sign", `{"params":{"data":"payload one","key_id":"rsa.key"}}`)
		}, 200, []want{{op: "sign", key: "rsa.key", alg: "RS/SHA256", data: sha("payload one"), client: "CN=bench"}}},
		{"sign, denied", func() (int, http.Header) {
			return postH(t, agg, s.url+"/sign", `{"params":{"data":"payload two","key_id":"rsa.key"}}`)
		}, 403, []want{{op: "sign", key: "rsa.key", data: sha("payload two"), client: "CN=agg", errPart: "may not use key"}}},
		{"sign, unknown key", func() (int, http.Header) {
			return postH(t, s.client, s.url+"/sign", `{"params":{"data":"p","key_id":"nope"}}`)
		}, 404, []want{{op: "sign", key: "nope", data: sha("p"), client: "CN=bench", errPart: "no key named"}}},
		{"makeRequest", func() (int, http.Header) {
			return postH(t, agg, s.url+"/makeRequest", `{"params":{"request":{`+req("POST", b.URL, "/echo/pay?iban=FI00", `,"body":"{\"amount\":1}"`, withQWAC)+`}}}`)
		}, 200, []want{
			{op: "makeRequest.start", key: "qwac.key", data: sha(`{"amount":1}`), target: "POST " + b.URL + "/echo/pay", client: "CN=agg"},
			{op: "makeRequest", key: "qwac.key", data: sha(`{"amount":1}`), target: "POST " + b.URL + "/echo/pay", client: "CN=agg"}}},
		{"makeRequest, private address", func() (int, http.Header) {
			return postH(t, agg, s.url+"/makeRequest", `{"params":{"request":{`+req("GET", "https://10.1.2.3", "/x", withQWAC)+`}}}`)
		}, 403, []want{ // refused by the address guard, when the call is made
			{op: "makeRequest.start", key: "qwac.key", data: sha(""), target: "GET https://10.1.2.3:443/x", client: "CN=agg"},
			{op: "makeRequest", key: "qwac.key", data: sha(""), target: "GET https://10.1.2.3:443/x", client: "CN=agg", errPart: "private"}}},
		{"makeRequest, denied by policy", func() (int, http.Header) {
			return postH(t, s.client, s.url+"/makeRequest", `{"params":{"request":{`+req("GET", b.URL, "/echo/x", withQWAC)+`}}}`)
		}, 403, []want{{op: "makeRequest", key: "qwac.key", data: sha(""), target: "GET " + b.URL + "/echo/x", client: "CN=bench", errPart: "may not makeRequest"}}},
		{"makeRequest, bank answer refused", func() (int, http.Header) {
			return postH(t, agg, s.url+"/makeRequest", `{"params":{"request":{`+req("GET", b.URL, "/binary", withQWAC)+`}}}`)
		}, 502, []want{
			{op: "makeRequest.start", key: "qwac.key", data: sha(""), target: "GET https://127.0.0.1:" + port + "/binary", client: "CN=agg"},
			{op: "makeRequest", key: "qwac.key", data: sha(""), target: "GET https://127.0.0.1:" + port + "/binary", client: "CN=agg", errPart: "UTF-8"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			seq, _ := s.log.Head()
			status, h := c.do()
			if status != c.status {
				t.Fatalf("status %d, want %d", status, c.status)
			}
			recs := records(t, s, seq)
			if len(recs) != len(c.want) {
				t.Fatalf("%d records, want %d: %+v", len(recs), len(c.want), recs)
			}
			for i, w := range c.want {
				r := recs[i]
				wantStatus := c.status
				if strings.HasSuffix(w.op, ".start") {
					wantStatus = 0
				}
				if r.Op != w.op || r.KeyID != w.key || r.DataSHA256 != w.data || r.Target != w.target || r.Client != w.client ||
					r.Status != wantStatus || r.RequestID != h.Get("X-Request-Id") || len(r.ClientSHA256) != 64 ||
					(w.alg != "" && r.Alg != w.alg) || !strings.Contains(r.Error, w.errPart) || (w.errPart == "" && r.Error != "") {
					t.Errorf("record %d: %+v\nwant %+v, status %d, request id %s", i, r, w, wantStatus, h.Get("X-Request-Id"))
				}
			}
		})
	}
}

// TestAuditFailsClosed: an API whose audit log cannot be written answers
// 503 with no result, and no request reaches the bank.
func TestAuditFailsClosed(t *testing.T) {
	t.Parallel()
	s, _ := bankStack(t, stackOptions{})
	st, err := store.Open(filepath.Join(t.TempDir(), "dead.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	dead, err := audit.Open(st)
	if err != nil {
		t.Fatal(err)
	}
	dead.Close() // every Append now fails
	url := s.serve(broker.Config{Audit: dead})
	agg := s.clientFor(t, "agg")
	const want = `{"code":503,"message":"Audit log unavailable","data":"no result is returned: the audit record of this operation cannot be written"}`
	before := s.bank.Requests()
	for _, c := range []struct {
		client     *http.Client
		path, body string
	}{
		{s.client, "/sign", `{"params":{"data":"x","key_id":"rsa.key"}}`},
		{s.client, "/sign", `{"params":{"data":"x","key_id":"nope"}}`},
		{agg, "/makeRequest", `{"params":{"request":{` + req("POST", s.bank.URL, "/echo/pay", `,"body":"pay"`, withQWAC) + `}}}`},
	} {
		status, body := post(t, c.client, url+c.path, c.body)
		if status != 503 || body != want {
			t.Errorf("%s %s: %d %s", c.path, c.body, status, body)
		}
	}
	if n := s.bank.Requests() - before; n != 0 {
		t.Fatalf("the bank received %d requests that could not be recorded", n)
	}
}

// postH posts a JSON body and returns the status and the answer's headers.
func postH(t *testing.T, c *http.Client, url, body string) (int, http.Header) {
	t.Helper()
	resp, err := c.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header
}

// TestRevokedSinceTheHandshake: a client whose certificate is refused
// after its connection was opened gets 403 on its next request, on
// record, and the connection is closed.
func TestRevokedSinceTheHandshake(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{})
	var revoked atomic.Bool
	url := s.serve(broker.Config{Audit: s.log, CheckClient: func(chain []*x509.Certificate) error {
		if revoked.Load() && chain[0].Subject.CommonName == "bench" {
			return errors.New("certificate revoked: client certificate (serial 1f) revoked on 2026-11-23T12:00:00Z")
		}
		return nil
	}})
	sign := `{"params":{"data":"x","key_id":"rsa.key"}}`
	if status, _ := post(t, s.client, url+"/sign", sign); status != 200 {
		t.Fatalf("before: %d", status)
	}
	revoked.Store(true)
	seq, _ := s.log.Head()
	resp, err := s.client.Post(url+"/sign", "application/json", strings.NewReader(sign))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := `{"code":403,"message":"Client certificate revoked","data":"certificate revoked: client certificate (serial 1f) revoked on 2026-11-23T12:00:00Z"}`
	if resp.StatusCode != 403 || string(body) != want || !resp.Close {
		t.Fatalf("after: %d %s (close %v)", resp.StatusCode, body, resp.Close)
	}
	recs := records(t, s, seq)
	if len(recs) != 1 || recs[0].Op != "revoked" || recs[0].Status != 403 || recs[0].Client != "CN=bench" || !strings.Contains(recs[0].Error, "serial 1f") {
		t.Fatalf("records %+v", recs)
	}
}
