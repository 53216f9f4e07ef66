package broker

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/brokerd/brokerd/httpsig"
	"github.com/brokerd/brokerd/jws"
	"github.com/brokerd/brokerd/keys"
)

// TestOperationErrorsOfTheTPM: the TPM's four conditions come back as
// four different answers, whatever wraps them.
func TestOperationErrorsOfTheTPM(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		err     error
		status  int
		message string
	}{
		{keys.ErrFailureMode, http.StatusServiceUnavailable, "TPM unavailable"},
		{keys.ErrWrongTPM, http.StatusInternalServerError, "Key unusable"},
		{keys.ErrCorruptBlob, http.StatusInternalServerError, "Key unusable"},
		{keys.ErrUnsupported, http.StatusBadRequest, "Unsupported by the TPM"},
	} {
		got := operationError(fmt.Errorf("keys: sign with %q: tpm: sign: %w", "k", c.err), "k")
		if got.status != c.status || got.message != c.message {
			t.Errorf("%v: %d %q, want %d %q", c.err, got.status, got.message, c.status, c.message)
		}
	}
	a, b := operationError(keys.ErrWrongTPM, "k"), operationError(keys.ErrCorruptBlob, "k")
	if a.data == b.data {
		t.Errorf("wrong TPM and damaged blob say the same: %v", a.data)
	}
}

// TestHelperErrors: a helper's failure is the request's fault (its
// package's sentinel: 400 with the reason alone) or the key's, as for
// /sign, whatever the JOSE or HTTP-signature code wrapped around it.
func TestHelperErrors(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		err      error
		sentinel error
		want     apiError
	}{
		{fmt.Errorf("%w: profile ob-3.1.4 signs with PS256 only", jws.ErrRequest), jws.ErrRequest,
			apiError{status: http.StatusBadRequest, message: "Cannot sign as asked", data: "profile ob-3.1.4 signs with PS256 only"}},
		{fmt.Errorf("%w: header Signature is brokerd's to set", httpsig.ErrRequest), httpsig.ErrRequest,
			apiError{status: http.StatusBadRequest, message: "Cannot sign as asked", data: "header Signature is brokerd's to set"}},
		{fmt.Errorf("jws: sign: keys: sign with %q: %w", "k", keys.ErrBusy), jws.ErrRequest, tpmBusy},
		{fmt.Errorf("httpsig: sign: %w", keys.ErrUnsupported), httpsig.ErrRequest,
			apiError{status: http.StatusBadRequest, message: "Unsupported by the TPM", data: "the appliance's TPM cannot make this signature; try hash_algorithm SHA256"}},
	} {
		if got := helperError(c.err, c.sentinel, "k"); got != c.want {
			t.Errorf("%v: %+v, want %+v", c.err, got, c.want)
		}
	}
}
