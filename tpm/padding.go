package tpm

import (
	"crypto"
	"crypto/rand"
	"errors"
	"fmt"
)

// Go's crypto/rsa does not export its encodings, so the two EMSA encodings
// of RFC 8017 are built here; the TPM only applies the private key to them.

// digestInfoPrefix is the DER prefix of DigestInfo for each hash (RFC 8017
// section 9.2, note 1).
var digestInfoPrefix = map[crypto.Hash][]byte{
	crypto.SHA1:   {0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14},
	crypto.SHA256: {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20},
	crypto.SHA384: {0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30},
	crypto.SHA512: {0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40},
}

// emsaPKCS1v15 returns the k-byte EMSA-PKCS1-v1_5 encoding of digest:
// 0x00 0x01 PS(0xff...) 0x00 DigestInfo.
func emsaPKCS1v15(h crypto.Hash, digest []byte, k int) ([]byte, error) {
	prefix, ok := digestInfoPrefix[h]
	if !ok {
		return nil, fmt.Errorf("hash %v is not supported for RSA PKCS #1 v1.5", h)
	}
	tLen := len(prefix) + len(digest)
	if k < tLen+11 {
		return nil, errors.New("key too short for this hash")
	}
	em := make([]byte, k)
	em[1] = 0x01
	for i := 2; i < k-tLen-1; i++ {
		em[i] = 0xff
	}
	copy(em[k-tLen:], prefix)
	copy(em[k-len(digest):], digest)
	return em, nil
}

// emsaPSS returns the EMSA-PSS encoding of digest with MGF1 over the same
// hash and a salt of saltLen random bytes, left-padded to k bytes (RFC 8017
// section 9.1.1 with emBits = modBits - 1).
func emsaPSS(h crypto.Hash, digest []byte, saltLen, modBits, k int) ([]byte, error) {
	hLen := h.Size()
	emBits := modBits - 1
	emLen := (emBits + 7) / 8
	if saltLen < 0 || emLen < hLen+saltLen+2 {
		return nil, fmt.Errorf("PSS salt length %d does not fit a %d-bit key with %v", saltLen, modBits, h)
	}
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return nil, fmt.Errorf("PSS salt: %w", err)
	}
	hh := h.New()
	hh.Write(make([]byte, 8))
	hh.Write(digest)
	hh.Write(salt)
	mHash := hh.Sum(nil)

	em := make([]byte, k)
	out := em[k-emLen:]
	db := out[:emLen-hLen-1]
	db[emLen-saltLen-hLen-2] = 0x01
	copy(db[emLen-saltLen-hLen-1:], salt)
	mgf1XOR(db, h, mHash)
	db[0] &= 0xff >> (8*emLen - emBits)
	copy(out[emLen-hLen-1:], mHash)
	out[emLen-1] = 0xbc
	return em, nil
}

// mgf1XOR XORs out with MGF1(seed) using hash h.
func mgf1XOR(out []byte, h crypto.Hash, seed []byte) {
	var counter [4]byte
	done := 0
	for done < len(out) {
		hh := h.New()
		hh.Write(seed)
		hh.Write(counter[:])
		block := hh.Sum(nil)
		for i := 0; i < len(block) && done < len(out); i++ {
			out[done] ^= block[i]
			done++
		}
		for i := 3; i >= 0; i-- {
			counter[i]++
			if counter[i] != 0 {
				break
			}
		}
	}
}
