package broker

import (
	"strings"
	"testing"
	"time"
)

// TestDenialQuotaSummary: beyond the quota refusals are counted per
// client, and the minute's end brings one summary record per client.
func TestDenialQuotaSummary(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 30, 10, 0, 5, 0, time.UTC)
	q := newDenialQuota(2)
	q.now = func() time.Time { return now }
	q.roll()
	var admitted int
	for range 5 {
		if ok, s := q.admit("fp-a", "CN=a"); ok {
			admitted++
		} else if len(s) != 0 {
			t.Fatal("a summary before the minute ended")
		}
	}
	q.admit("fp-b", "CN=b")
	if admitted != 2 {
		t.Fatalf("%d admitted, want 2", admitted)
	}
	now = now.Add(time.Minute)
	ok, summaries := q.admit("fp-a", "CN=a")
	if !ok || len(summaries) != 1 || summaries[0].ClientSHA256 != "fp-a" || summaries[0].Client != "CN=a" ||
		!strings.HasPrefix(summaries[0].Detail, "3 refusals of this client in the minute from 2026-11-30T10:00:00Z") {
		t.Fatalf("new minute: admitted %v, summaries %+v", ok, summaries)
	}
	if s := q.roll(); len(s) != 0 {
		t.Fatalf("summaries twice: %+v", s)
	}
}
