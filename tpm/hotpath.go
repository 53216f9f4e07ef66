package tpm

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// The two commands on the signing path, TPM2_RSA_Decrypt and TPM2_Sign
// with a password session, are encoded here by hand. go-tpm builds every
// command by reflection, which costs 50-70 µs per command: a quarter of a
// P-256 signature on swtpm. Everything else goes through go-tpm, and a
// test checks these bytes against the ones go-tpm sends.

// command builds a command with one handle and a password session.
func command(cc tpm2.TPMCC, h tpm2.TPMHandle, auth []byte, params []byte) []byte {
	authArea := 4 + 2 + 1 + 2 + len(auth) // session handle, nonce, attributes, hmac
	size := 10 + 4 + 4 + authArea + len(params)
	b := make([]byte, 0, size)
	b = binary.BigEndian.AppendUint16(b, uint16(tpm2.TPMSTSessions))
	b = binary.BigEndian.AppendUint32(b, uint32(size))
	b = binary.BigEndian.AppendUint32(b, uint32(cc))
	b = binary.BigEndian.AppendUint32(b, uint32(h))
	b = binary.BigEndian.AppendUint32(b, uint32(authArea))
	b = binary.BigEndian.AppendUint32(b, uint32(tpm2.TPMRSPW))
	b = binary.BigEndian.AppendUint16(b, 0) // nonceCaller
	b = append(b, 0)                        // sessionAttributes
	b = append2B(b, auth)
	return append(b, params...)
}

func append2B(b, data []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(data)))
	return append(b, data...)
}

// responseParams checks a response's header and return code and returns
// its parameter area.
func responseParams(rsp []byte) ([]byte, error) {
	if len(rsp) < 10 || int(binary.BigEndian.Uint32(rsp[2:6])) != len(rsp) {
		return nil, errors.New("malformed TPM response")
	}
	if rc := tpm2.TPMRC(binary.BigEndian.Uint32(rsp[6:10])); rc != tpm2.TPMRCSuccess {
		return nil, rc
	}
	if tpm2.TPMST(binary.BigEndian.Uint16(rsp)) != tpm2.TPMSTSessions || len(rsp) < 14 {
		return nil, errors.New("malformed TPM response: no session area")
	}
	n := int(binary.BigEndian.Uint32(rsp[10:14]))
	if 14+n > len(rsp) {
		return nil, errors.New("malformed TPM response: parameter size")
	}
	return rsp[14 : 14+n], nil
}

// read2B reads a TPM2B from b and returns it with the rest.
func read2B(b []byte) ([]byte, []byte, error) {
	if len(b) < 2 {
		return nil, nil, errors.New("malformed TPM response: short buffer")
	}
	n := int(binary.BigEndian.Uint16(b))
	if 2+n > len(b) {
		return nil, nil, errors.New("malformed TPM response: short buffer")
	}
	return b[2 : 2+n], b[2+n:], nil
}

// rsaDecryptCommand is TPM2_RSA_Decrypt(key, cipherText, scheme NULL, no
// label): raw RSA with the private key.
func rsaDecryptCommand(h tpm2.TPMHandle, auth, em []byte) []byte {
	params := append2B(make([]byte, 0, 2+len(em)+4), em)
	params = binary.BigEndian.AppendUint16(params, uint16(tpm2.TPMAlgNull)) // inScheme
	params = binary.BigEndian.AppendUint16(params, 0)                       // label
	return command(tpm2.TPMCCRSADecrypt, h, auth, params)
}

// ecdsaSignCommand is TPM2_Sign(key, digest, ECDSA with hash, NULL ticket).
func ecdsaSignCommand(h tpm2.TPMHandle, auth, digest []byte, hash tpm2.TPMIAlgHash) []byte {
	params := append2B(make([]byte, 0, 2+len(digest)+12), digest)
	params = binary.BigEndian.AppendUint16(params, uint16(tpm2.TPMAlgECDSA))
	params = binary.BigEndian.AppendUint16(params, uint16(hash))
	params = binary.BigEndian.AppendUint16(params, uint16(tpm2.TPMSTHashCheck))
	params = binary.BigEndian.AppendUint32(params, uint32(tpm2.TPMRHNull))
	params = binary.BigEndian.AppendUint16(params, 0) // ticket digest
	return command(tpm2.TPMCCSign, h, auth, params)
}

// rsaDecrypt runs TPM2_RSA_Decrypt on a loaded key. Token holder only.
func (d *Device) rsaDecrypt(o *object, auth, em []byte) ([]byte, error) {
	rsp, err := d.tr.Send(rsaDecryptCommand(o.handle, auth, em))
	if err != nil {
		return nil, err
	}
	params, err := responseParams(rsp)
	if err != nil {
		return nil, fmt.Errorf("rsa decrypt: %w", err)
	}
	msg, _, err := read2B(params)
	if err != nil {
		return nil, fmt.Errorf("rsa decrypt: %w", err)
	}
	return msg, nil
}

// ecdsaSign runs TPM2_Sign with ECDSA on a loaded key and returns r and s.
// Token holder only.
func (d *Device) ecdsaSign(o *object, auth, digest []byte, hash tpm2.TPMIAlgHash) ([]byte, []byte, error) {
	rsp, err := d.tr.Send(ecdsaSignCommand(o.handle, auth, digest, hash))
	if err != nil {
		return nil, nil, err
	}
	params, err := responseParams(rsp)
	if err != nil {
		return nil, nil, fmt.Errorf("sign: %w", err)
	}
	if len(params) < 4 || tpm2.TPMAlgID(binary.BigEndian.Uint16(params)) != tpm2.TPMAlgECDSA {
		return nil, nil, errors.New("sign: not an ECDSA signature")
	}
	r, rest, err := read2B(params[4:])
	if err != nil {
		return nil, nil, fmt.Errorf("sign: %w", err)
	}
	s, _, err := read2B(rest)
	if err != nil {
		return nil, nil, fmt.Errorf("sign: %w", err)
	}
	return r, s, nil
}
