package broker_test

import (
	"strings"
	"testing"

	"github.com/brokerd/brokerd/broker"
)

// TestRefusalsAreRecordedWithinAQuota: malformed requests (413, 400, 422)
// are on record like denials, every refusal's fields are bounded, and
// beyond the client's quota refusals are counted, not recorded one by one;
// a signature is always recorded.
func TestRefusalsAreRecordedWithinAQuota(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{})
	url := s.serve(broker.Config{Audit: s.log, DenialQuota: 6, MaxBody: 4096})
	seq, _ := s.log.Head()
	huge := strings.Repeat("k", 3000)
	bodies := []struct {
		body   string
		status int
		err    string
	}{
		{strings.Repeat("x", 5000), 413, "Request body too large"},
		{"{\"params\":\xff}", 400, "the body is not JSON"},
		{`{"params":`, 422, "invalid request: body.10: JSON decode error"},
		{`{"params":{"data":"x"}}`, 422, "invalid request: body.params.key_id: Field required"},
		{`{"params":{"data":"x","key_id":"` + huge + `"}}`, 404, "Unknown key"},
	}
	for _, b := range bodies {
		if status, out := post(t, s.client, url+"/sign", b.body); status != b.status {
			t.Fatalf("%.40s: %d %s", b.body, status, out)
		}
	}
	recs := records(t, s, seq)
	if len(recs) != len(bodies) {
		t.Fatalf("%d records for %d refusals: %+v", len(recs), len(bodies), recs)
	}
	for i, r := range recs {
		if r.Op != "sign" || r.Status != bodies[i].status || !strings.Contains(r.Error, bodies[i].err) || len(r.ClientSHA256) != 64 {
			t.Errorf("record %d: %+v, want status %d error %q", i, r, bodies[i].status, bodies[i].err)
		}
		if len(r.KeyID) > 256 || len(r.Error) > 256 {
			t.Errorf("record %d is not bounded: key %d bytes, error %d bytes", i, len(r.KeyID), len(r.Error))
		}
		if i > 0 && len(r.DataSHA256) != 64 {
			t.Errorf("record %d has no body digest", i)
		}
	}
	// Beyond the quota (6 a minute, 5 used), refusals are counted only,
	// and an operation that runs is still recorded.
	for range 10 {
		post(t, s.client, url+"/sign", `{"params":{"data":"x","key_id":"nope"}}`)
	}
	if status, out := post(t, s.client, url+"/sign", `{"params":{"data":"x","key_id":"rsa.key"}}`); status != 200 {
		t.Fatalf("sign: %d %s", status, out)
	}
	recs = records(t, s, seq)
	if n := len(recs); n != 7 || recs[6].Status != 200 {
		t.Fatalf("%d records (want 6 refusals and the signature): %+v", n, recs[4:])
	}
}
