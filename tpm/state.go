package tpm

import (
	"sync"

	"github.com/google/go-tpm/tpm2"
)

// cryptoState is what the device knows of the TPM's cryptography, and the
// session it signs in.
type cryptoState struct {
	// Set in Open, read-only afterwards.
	fips   bool
	hashes map[tpm2.TPMIAlgHash]bool

	// support holds TestParms' verdict per algorithm: nil (the TPM holds
	// such keys), an ErrUnsupported error, or the error of a probe that
	// could not tell (asked again on the next CheckSupport).
	mu      sync.Mutex
	support map[Algorithm]error

	// Owned by the token holder.
	sess            *authSession
	sessionsStarted int // salted sessions started since Open

	// passwordAuth makes the signing commands use password sessions, the
	// auth value in clear on the bus. Only the benchmark that measures
	// what the salted session costs sets it (export_test.go).
	passwordAuth bool
}
