package tpm

import (
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// algNames are the TCG names of algorithm IDs (TPM 2.0 Part 2, TPM_ALG_ID;
// TCG Algorithm Registry).
var algNames = map[tpm2.TPMAlgID]string{
	0x0001: "rsa", 0x0003: "tdes", 0x0004: "sha1", 0x0005: "hmac", 0x0006: "aes", 0x0007: "mgf1",
	0x0008: "keyedhash", 0x000A: "xor", 0x000B: "sha256", 0x000C: "sha384", 0x000D: "sha512",
	0x0010: "null", 0x0012: "sm3_256", 0x0013: "sm4", 0x0014: "rsassa", 0x0015: "rsaes",
	0x0016: "rsapss", 0x0017: "oaep", 0x0018: "ecdsa", 0x0019: "ecdh", 0x001A: "ecdaa", 0x001B: "sm2",
	0x001C: "ecschnorr", 0x001D: "ecmqv", 0x0020: "kdf1_sp800_56a", 0x0021: "kdf2",
	0x0022: "kdf1_sp800_108", 0x0023: "ecc", 0x0025: "symcipher", 0x0026: "camellia",
	0x0027: "sha3_256", 0x0028: "sha3_384", 0x0029: "sha3_512", 0x003F: "cmac", 0x0040: "ctr",
	0x0041: "ofb", 0x0042: "cbc", 0x0043: "cfb", 0x0044: "ecb",
}

func algName(a tpm2.TPMAlgID) string {
	if n, ok := algNames[a]; ok {
		return n
	}
	return fmt.Sprintf("0x%04x", uint16(a))
}

// curveNames are the TCG names of curve IDs (TPM_ECC_CURVE).
var curveNames = map[tpm2.TPMECCCurve]string{
	0x0001: "nist_p192", 0x0002: "nist_p224", 0x0003: "nist_p256", 0x0004: "nist_p384", 0x0005: "nist_p521",
	0x0010: "bn_p256", 0x0011: "bn_p638", 0x0020: "sm2_p256", 0x0030: "bp_p256_r1", 0x0031: "bp_p384_r1",
	0x0032: "bp_p512_r1", 0x0040: "curve25519", 0x0041: "curve448",
}

func curveName(c tpm2.TPMECCCurve) string {
	if n, ok := curveNames[c]; ok {
		return n
	}
	return fmt.Sprintf("0x%04x", uint16(c))
}

// ccNames are the Part 3 names of the commands brokerd sends.
var ccNames = map[tpm2.TPMCC]string{
	tpm2.TPMCCEvictControl: "EvictControl", 0x129: "HierarchyChangeAuth",
	tpm2.TPMCCCreatePrimary: "CreatePrimary", tpm2.TPMCCStartup: "Startup", tpm2.TPMCCNVRead: "NV_Read",
	tpm2.TPMCCObjectChangeAuth: "ObjectChangeAuth", tpm2.TPMCCPolicySecret: "PolicySecret",
	tpm2.TPMCCCreate: "Create", tpm2.TPMCCImport: "Import", tpm2.TPMCCLoad: "Load",
	tpm2.TPMCCRSADecrypt: "RSA_Decrypt", tpm2.TPMCCSign: "Sign", tpm2.TPMCCUnseal: "Unseal",
	tpm2.TPMCCContextLoad: "ContextLoad", tpm2.TPMCCContextSave: "ContextSave",
	tpm2.TPMCCFlushContext: "FlushContext", tpm2.TPMCCNVReadPublic: "NV_ReadPublic",
	tpm2.TPMCCReadPublic: "ReadPublic", tpm2.TPMCCStartAuthSession: "StartAuthSession",
	tpm2.TPMCCGetCapability: "GetCapability", tpm2.TPMCCGetRandom: "GetRandom",
	tpm2.TPMCCGetTestResult: "GetTestResult", tpm2.TPMCCPCRRead: "PCR_Read", tpm2.TPMCCPolicyPCR: "PolicyPCR",
	tpm2.TPMCCReadClock: "ReadClock", tpm2.TPMCCTestParms: "TestParms", tpm2.TPMCCActivateCredential: "ActivateCredential",
}

// ccName names a command code as TPM 2.0 Part 3 does ("TPM2_Sign").
func ccName(cc tpm2.TPMCC) string {
	if n, ok := ccNames[cc]; ok {
		return "TPM2_" + n
	}
	return fmt.Sprintf("0x%03x", uint32(cc))
}
