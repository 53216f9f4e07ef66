package broker_test

import (
	"strings"
	"testing"
	"time"

	"github.com/brokerd/brokerd/broker"
)

// TestInFlightLimits: a client over its requests in progress gets 429 at
// once, and makeRequest over the global bound of bank calls gets 503;
// both are on record, and the slow call still completes.
func TestInFlightLimits(t *testing.T) {
	t.Parallel()
	s, agg := bankStack(t, stackOptions{})
	url := s.serve(broker.Config{Audit: s.log, MaxInFlightPerClient: 1, MaxBankCalls: 1})
	slow := `{"params":{"request":{` + req("GET", s.bank.URL, "/slow?for=700ms", withQWAC) + `}}}`
	before := s.bank.Requests()
	done := make(chan int, 1)
	go func() {
		status, _ := post(t, agg, url+"/makeRequest", slow)
		done <- status
	}()
	if !s.bank.WaitRequests(before+1, 10*time.Second) { // the slow call has reached the bank
		t.Fatal("the slow call never reached the bank")
	}
	seq, _ := s.log.Head()
	if status, body := post(t, agg, url+"/sign", `{"params":{"data":"x","key_id":"rsa.key"}}`); status != 429 ||
		!strings.Contains(body, `"message":"Too many requests"`) {
		t.Fatalf("second request of the same client: %d %s", status, body)
	}
	other := s.clientFor(t, "agg") // another certificate: its own count
	if status, body := post(t, other, url+"/makeRequest", slow); status != 503 || !strings.Contains(body, "Bank calls at capacity") {
		t.Fatalf("a bank call over the global bound: %d %s", status, body)
	}
	if status := <-done; status != 200 {
		t.Fatalf("the slow call: %d", status)
	}
	recs := records(t, s, seq)
	if len(recs) < 2 || recs[0].Status != 429 || recs[0].Op != "sign" || recs[1].Status != 503 || recs[1].Op != "makeRequest" {
		t.Fatalf("records %+v", recs)
	}
}
