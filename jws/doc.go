// Package jws builds and checks the JSON Web Signatures open-banking APIs
// ask of a third-party provider: compact and detached JWS, the UK Open
// Banking x-jws-signature header in its v3.1.3 (RFC 7797 unencoded
// payload) and v3.1.4+ forms, and RFC 7523 client assertions.
//
// Signing goes through github.com/go-jose/go-jose/v4 with the key as an
// opaque signer: the package never holds a private key, it hands signing
// inputs to a SignFunc (in brokerd, a TPM key of the registry). What it
// builds itself is what no library does: the Open Banking header claims,
// and a verifier that understands their "crit" entries (go-jose refuses
// any critical header but b64, so it cannot check a bank's signature).
//
// The package imports nothing of brokerd; broker imports it.
package jws
