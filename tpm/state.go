package tpm

// cryptoState is what the device knows of the TPM's cryptography, and the
// session it signs in.
type cryptoState struct {
	// Owned by the token holder.
	sess            *authSession
	sessionsStarted int // salted sessions started since Open

	// passwordAuth makes the signing commands use password sessions, the
	// auth value in clear on the bus. Only the benchmark that measures
	// what the salted session costs sets it (export_test.go).
	passwordAuth bool
}
