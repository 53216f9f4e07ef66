package broker

import (
	"fmt"
	"net/http"
	"testing"

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
