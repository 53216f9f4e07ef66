package tpm

import (
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// ECDSA with any hash on any TPM. TPM2_Sign names a hash in its scheme,
// and a TPM refuses one it lacks (an SLB9670 has SHA-1 and SHA-256 only:
// ES with SHA-512 failed there with TPM_RC_HASH). But ECDSA uses only the
// leftmost bits of a digest, as many as the curve's order has (FIPS 186-5
// 6.4.1, SEC 1 4.1.3 step 5): a P-256 signature over a SHA-512 digest is
// the signature over the digest's first 32 bytes. So the TPM always gets
// a digest of the curve's size, with the hash of that size named (SHA-256
// for P-256, SHA-384 for P-384), and the signature verifies as ECDSA with
// the hash the client asked for.

// ecdsaHash returns the hash TPM2_Sign names for ECDSA with a key of alg:
// the one whose digest has the size of the curve's order.
func ecdsaHash(alg Algorithm) (tpm2.TPMIAlgHash, bool) {
	switch alg {
	case P256:
		return tpm2.TPMAlgSHA256, true
	case P384:
		return tpm2.TPMAlgSHA384, true
	case P521: // never in a TPM (sealed), but 521 bits are not whole bytes
	}
	return 0, false
}

// ecdsaInput returns the digest of size bytes that TPM2_Sign gets for an
// ECDSA signature over digest: its leftmost size bytes, or, when digest is
// shorter, digest left-padded with zeros (the same integer). The curves a
// TPM holds have orders of whole bytes (256, 384 bits), so cutting bytes
// cuts exactly the bits ECDSA drops.
func ecdsaInput(digest []byte, size int) []byte {
	if len(digest) >= size {
		return digest[:size]
	}
	out := make([]byte, size)
	copy(out[size-len(digest):], digest)
	return out
}

// hashName names a TPM hash algorithm for messages.
func hashName(h tpm2.TPMIAlgHash) string {
	switch h {
	case tpm2.TPMAlgSHA1:
		return "SHA-1"
	case tpm2.TPMAlgSHA256:
		return "SHA-256"
	case tpm2.TPMAlgSHA384:
		return "SHA-384"
	case tpm2.TPMAlgSHA512:
		return "SHA-512"
	}
	return fmt.Sprintf("hash %#x", uint16(h))
}
