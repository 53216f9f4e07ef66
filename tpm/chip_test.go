package tpm_test

import (
	"encoding/binary"

	"github.com/google/go-tpm/tpm2"
)

// Real chips played on swtpm: tpmproxy's Command hook answers some
// commands as a given chip would, and lets the rest through.

// rcParameter1 and rcParameter2 mark a format-1 return code as being
// about the first or second command parameter (TPM_RC_P + N << 8).
const (
	rcParameter1 = 0x040 + 0x100
	rcParameter2 = 0x040 + 0x200
)

// ccOf returns a command's code.
func ccOf(cmd []byte) tpm2.TPMCC { return tpm2.TPMCC(binary.BigEndian.Uint32(cmd[6:10])) }

// errorResponse is a response with return code rc and nothing else.
func errorResponse(rc uint32) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(tpm2.TPMSTNoSessions))
	b = binary.BigEndian.AppendUint32(b, 10)
	return binary.BigEndian.AppendUint32(b, rc)
}

// successResponse is a successful response without sessions carrying body
// (handles and parameters).
func successResponse(body []byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(tpm2.TPMSTNoSessions))
	b = binary.BigEndian.AppendUint32(b, uint32(10+len(body)))
	b = binary.BigEndian.AppendUint32(b, 0)
	return append(b, body...)
}

// getCapability returns the capability and first property a
// TPM2_GetCapability command asks for.
func getCapability(cmd []byte) (tpm2.TPMCap, uint32) {
	return tpm2.TPMCap(binary.BigEndian.Uint32(cmd[10:14])), binary.BigEndian.Uint32(cmd[14:18])
}

// signScheme returns the scheme and the hash a TPM2_Sign command names
// (they follow the digest, which parameter encryption hides, but not its
// size).
func signScheme(cmd []byte) (tpm2.TPMAlgID, tpm2.TPMIAlgHash) {
	params := cmd[18+binary.BigEndian.Uint32(cmd[14:18]):]
	rest := params[2+binary.BigEndian.Uint16(params):]
	return tpm2.TPMAlgID(binary.BigEndian.Uint16(rest)), tpm2.TPMIAlgHash(binary.BigEndian.Uint16(rest[2:]))
}

// slb9670Hashes are the hashes of an Infineon SLB9670 (TPM 2.0 firmware
// 7.x): SHA-1 and SHA-256 only.
var slb9670Hashes = []tpm2.TPMAlgID{tpm2.TPMAlgSHA1, tpm2.TPMAlgSHA256}

// slb9670 plays an Infineon SLB9670 on swtpm: its algorithm list has SHA-1
// and SHA-256 as its only hashes, TestParms refuses RSA above 2048 bits
// and curves other than P-256 (TPM_RC_VALUE, as the chip's firmware
// answers), and TPM2_Sign naming another hash fails with TPM_RC_HASH.
func slb9670(cmd []byte) []byte {
	switch ccOf(cmd) {
	case tpm2.TPMCCGetCapability:
		if c, _ := getCapability(cmd); c == tpm2.TPMCapAlgs {
			return algorithmsResponse([]tpm2.TPMAlgID{tpm2.TPMAlgRSA, tpm2.TPMAlgSHA1, tpm2.TPMAlgAES,
				tpm2.TPMAlgSHA256, tpm2.TPMAlgECC, tpm2.TPMAlgECDSA}, slb9670Hashes)
		}
	case tpm2.TPMCCTestParms:
		typ := tpm2.TPMAlgID(binary.BigEndian.Uint16(cmd[10:12]))
		size := binary.BigEndian.Uint16(cmd[16:18]) // RSA key bits, or the curve
		if typ == tpm2.TPMAlgRSA && size > 2048 || typ == tpm2.TPMAlgECC && tpm2.TPMECCCurve(size) != tpm2.TPMECCNistP256 {
			return errorResponse(uint32(tpm2.TPMRCValue) + rcParameter1)
		}
	case tpm2.TPMCCSign:
		if _, h := signScheme(cmd); h != tpm2.TPMAlgSHA1 && h != tpm2.TPMAlgSHA256 {
			return errorResponse(uint32(tpm2.TPMRCHash) + rcParameter2)
		}
	}
	return nil
}

// algorithmsResponse answers TPM2_GetCapability(TPM_CAP_ALGS) with algs,
// marking those in hashes as hash algorithms.
func algorithmsResponse(algs, hashes []tpm2.TPMAlgID) []byte {
	b := []byte{0} // moreData
	b = binary.BigEndian.AppendUint32(b, uint32(tpm2.TPMCapAlgs))
	b = binary.BigEndian.AppendUint32(b, uint32(len(algs)))
	for _, a := range algs {
		attrs := uint32(0)
		for _, h := range hashes {
			if a == h {
				attrs = 1 << 2 // TPMA_ALGORITHM.hash
			}
		}
		b = binary.BigEndian.AppendUint16(b, uint16(a))
		b = binary.BigEndian.AppendUint32(b, attrs)
	}
	return successResponse(b)
}

// propertyResponse answers TPM2_GetCapability(TPM_CAP_TPM_PROPERTIES) with
// one property.
func propertyResponse(pt tpm2.TPMPT, value uint32) []byte {
	b := []byte{0} // moreData
	b = binary.BigEndian.AppendUint32(b, uint32(tpm2.TPMCapTPMProperties))
	b = binary.BigEndian.AppendUint32(b, 1)
	b = binary.BigEndian.AppendUint32(b, uint32(pt))
	b = binary.BigEndian.AppendUint32(b, value)
	return successResponse(b)
}
