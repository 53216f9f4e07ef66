// Package pki is brokerd's own certification authority: a root whose key
// stays in the TPM, the server certificate it issues for the appliance's
// names (renewed before it expires), the client certificates it issues
// from CSRs, the registry of those clients, and revocation: brokerd's own
// revocations and CRLs of other CAs, checked on every handshake.
//
// The package builds certificates and checks chains; it holds no key
// itself: the CA's key is a crypto.Signer (a TPM key in brokerd).
package pki
