// Package layering holds the test that keeps brokerd's imports one-way, as
// DESIGN.md draws them: cmd → daemon → (broker, netstack, pki, audit, keys,
// policy, store) → tpm, with tpm, store and policy importing nothing of
// the module but leaf helpers, netstack knowing nothing of broker, and
// broker nothing of tpm. It has no code.
package layering
