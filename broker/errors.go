package broker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/brokerd/brokerd/audit"
	"github.com/brokerd/brokerd/keys"
	"github.com/brokerd/brokerd/policy"
)

// apiError is an answer in the reference's error shape:
// {"code":N,"message":"...","data":...}. data is a string or nil and never
// holds file paths, Go type names or stack traces.
type apiError struct {
	status     int
	message    string
	data       any // string or nil
	retryAfter string
}

func (e *apiError) Error() string { return fmt.Sprint(e.message, ": ", e.data) }

func writeError(w http.ResponseWriter, e apiError) {
	if e.retryAfter != "" {
		w.Header().Set("Retry-After", e.retryAfter)
	}
	writeRaw(w, e.status, e.body())
}

// body is the error's JSON.
func (e apiError) body() []byte {
	b := []byte(`{"code":`)
	b = strconv.AppendInt(b, int64(e.status), 10)
	b = append(b, `,"message":`...)
	b = pyQuote(b, e.message)
	b = append(b, `,"data":`...)
	if s, ok := e.data.(string); ok {
		b = pyQuote(b, s)
	} else {
		b = append(b, "null"...)
	}
	return append(b, '}')
}

// text is the error for the audit record.
func (e apiError) text() string {
	if s, ok := e.data.(string); ok {
		return e.message + ": " + s
	}
	return e.message
}

// writeRaw sends a JSON body.
func writeRaw(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body)
}

// writeJSON sends v as compact JSON without HTML escaping (for brokerd's
// own endpoints, whose output the reference has no counterpart of).
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, apiError{status: http.StatusInternalServerError, message: "Internal server error"})
		return
	}
	writeRaw(w, status, b)
}

// bodyTooLarge is the 413 answer.
func bodyTooLarge(limit int64) apiError {
	return apiError{status: http.StatusRequestEntityTooLarge, message: "Request body too large",
		data: fmt.Sprintf("the limit is %d bytes", limit)}
}

// readBody reads the request body up to limit bytes.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, *apiError) {
	if r.ContentLength > limit {
		e := bodyTooLarge(limit)
		return nil, &e
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			e := bodyTooLarge(limit)
			return nil, &e
		}
		return nil, &apiError{status: http.StatusBadRequest, message: "Bad request", data: "the request body could not be read"}
	}
	return body, nil
}

// decodeRequest reads and validates a request body for operation op with
// parse, answering 413, 400 or 422 itself when it fails; the refusal is
// on record (within the client's quota), with the body's SHA-256.
func decodeRequest[T any](a *API, w http.ResponseWriter, r *http.Request, op policy.Op, parse func([]byte, string) (T, validationErrors, error)) (T, bool) {
	var zero T
	rec := audit.Record{Op: string(op)}
	body, bad := readBody(w, r, a.cfg.MaxBody)
	if bad != nil {
		rec.Status, rec.Error = bad.status, bad.text()
		a.refuse(w, r, rec, bad.status, bad.body())
		return zero, false
	}
	sum := sha256.Sum256(body)
	rec.DataSHA256 = hex.EncodeToString(sum[:])
	p, verrs, err := parse(body, r.Header.Get("Content-Type"))
	switch {
	case err != nil:
		rec.Status, rec.Error = http.StatusBadRequest, "the body is not JSON (not UTF-8)"
		a.refuse(w, r, rec, http.StatusBadRequest, []byte(`{"detail":"There was an error parsing the body"}`))
		return zero, false
	case verrs != nil:
		rec.Status, rec.Error = http.StatusUnprocessableEntity, "invalid request: "+verrs.summary()
		a.refuse(w, r, rec, http.StatusUnprocessableEntity, verrs.encode())
		return zero, false
	}
	return p, true
}

// refuse records a malformed request and answers it with body.
func (a *API) refuse(w http.ResponseWriter, r *http.Request, rec audit.Record, status int, body []byte) {
	if err := a.record(r, rec); err != nil {
		writeError(w, auditUnavailable)
		return
	}
	writeRaw(w, status, body)
}

// tpmBusy answers an operation the TPM's queue has no room for.
var tpmBusy = apiError{status: http.StatusServiceUnavailable, message: "TPM busy", data: "too many operations are waiting for the TPM; retry later", retryAfter: "1"}

// operationError maps an error of a key operation to its answer. The key
// name is echoed within the bounds of an audit field: a client's
// megabyte-long name does not come back whole.
func operationError(err error, keyID string) apiError {
	keyID = audit.Truncate(keyID, audit.MaxField)
	switch {
	case errors.Is(err, keys.ErrUnknownKey):
		return apiError{status: http.StatusNotFound, message: "Unknown key", data: fmt.Sprintf("no key named %q", keyID)}
	case errors.Is(err, keys.ErrIncompatible):
		return apiError{status: http.StatusBadRequest, message: "Algorithm incompatible with key", data: incompatibleDetail(err)}
	case errors.Is(err, keys.ErrBusy):
		return tpmBusy
	case errors.Is(err, keys.ErrUnavailable), errors.Is(err, keys.ErrClosed):
		return apiError{status: http.StatusServiceUnavailable, message: "TPM unavailable", data: "the TPM does not answer; retry later", retryAfter: "5"}
	case errors.Is(err, keys.ErrFailureMode):
		return apiError{status: http.StatusServiceUnavailable, message: "TPM unavailable", data: "the TPM is in failure mode; the appliance needs a restart"}
	case errors.Is(err, keys.ErrWrongTPM):
		return apiError{status: http.StatusInternalServerError, message: "Key unusable", data: fmt.Sprintf("key %q cannot be loaded by this TPM; the operator must import it again", keyID)}
	case errors.Is(err, keys.ErrCorruptBlob):
		return apiError{status: http.StatusInternalServerError, message: "Key unusable", data: fmt.Sprintf("key %q is damaged in the appliance's state; the operator must import it again", keyID)}
	case errors.Is(err, keys.ErrUnsupported):
		return apiError{status: http.StatusBadRequest, message: "Unsupported by the TPM", data: "the appliance's TPM cannot make this signature; try hash_algorithm SHA256"}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return apiError{status: http.StatusServiceUnavailable, message: "Request cancelled", data: "the request ended before the operation ran"}
	}
	return apiError{status: http.StatusInternalServerError, message: "Internal server error", data: nil}
}

// incompatibleDetail names the algorithm and the key type, as the
// reference's "Algorithm RS is incompatible with key type ..." does, in
// words a client can act on.
func incompatibleDetail(err error) string {
	var ie *keys.IncompatibleError
	if errors.As(err, &ie) {
		return fmt.Sprintf("Algorithm %s is incompatible with key type %s", ie.Alg, ie.KeyType)
	}
	return "the algorithm does not suit this key"
}
