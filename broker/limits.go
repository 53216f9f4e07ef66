package broker

import (
	"net/http"
	"strconv"
	"sync"
)

// Limits unless configured otherwise.
const (
	// DefaultMaxInFlightPerClient bounds one client's requests in
	// progress: more from the same certificate wait in no queue, they get
	// 429 at once, before their body is read.
	DefaultMaxInFlightPerClient = 64
	// DefaultMaxBankCalls bounds the makeRequest calls in progress.
	DefaultMaxBankCalls = 256
)

// inFlight counts requests in progress per client.
type inFlight struct {
	max int
	mu  sync.Mutex
	n   map[string]int
}

// acquire takes a slot for client fp; false when it has max already.
func (f *inFlight) acquire(fp string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n[fp] >= f.max {
		return false
	}
	f.n[fp]++
	return true
}

func (f *inFlight) release(fp string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n[fp]--; f.n[fp] <= 0 {
		delete(f.n, fp)
	}
}

// tooMany is the answer to a client over its limit.
func tooMany(limit int) apiError {
	return apiError{status: http.StatusTooManyRequests, message: "Too many requests",
		data: "this client has " + strconv.Itoa(limit) + " requests in progress already; retry when one ends", retryAfter: "1"}
}

// bankCallsFull is the answer when makeRequest is at capacity.
var bankCallsFull = apiError{status: http.StatusServiceUnavailable, message: "Bank calls at capacity",
	data: "too many calls to banks are in progress; retry later", retryAfter: "1"}

// opOf names the operation of a request path, for refusals recorded
// before the handler runs.
func opOf(path string) string {
	if op, ok := operations[path]; ok {
		return op
	}
	if _, ok := knownPaths[path]; ok {
		return path
	}
	return "other" // a metrics label must not take any path a client sends
}

// operations name the operations of the API's paths; signers are those
// that sign with the TPM, refused at once when its queue is full.
var (
	operations = map[string]string{"/sign": "sign", "/makeRequest": "makeRequest", "/jws": "jws",
		"/jws/verify": "jws.verify", "/clientAssertion": "clientAssertion", "/httpsig": "httpsig"}
	signers = map[string]bool{"/sign": true, "/jws": true, "/clientAssertion": true, "/httpsig": true}
)

// knownPaths are the API's other paths, for labels.
var knownPaths = map[string]bool{"/": true, "/health": true, "/keys": true, "/openapi.json": true}
