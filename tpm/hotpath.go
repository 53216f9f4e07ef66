package tpm

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// The commands on the signing path, TPM2_RSA_Decrypt and TPM2_Sign, are
// encoded here by hand, in a salted HMAC session (session.go) or, for the
// benchmark's comparison only, with a password session. go-tpm builds
// every command by reflection, which costs 50-70 µs per command: a
// quarter of a P-256 signature on swtpm. Everything else goes through
// go-tpm, and a test checks these bytes against the ones go-tpm sends.

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

// responseParts checks a response's header and return code and returns
// its parameter area and its session area.
func responseParts(rsp []byte) ([]byte, []byte, error) {
	if len(rsp) < 10 || int(binary.BigEndian.Uint32(rsp[2:6])) != len(rsp) {
		return nil, nil, errors.New("malformed TPM response")
	}
	if rc := tpm2.TPMRC(binary.BigEndian.Uint32(rsp[6:10])); rc != tpm2.TPMRCSuccess {
		return nil, nil, rc
	}
	if tpm2.TPMST(binary.BigEndian.Uint16(rsp)) != tpm2.TPMSTSessions || len(rsp) < 14 {
		return nil, nil, errors.New("malformed TPM response: no session area")
	}
	n := int(binary.BigEndian.Uint32(rsp[10:14]))
	if 14+n > len(rsp) {
		return nil, nil, errors.New("malformed TPM response: parameter size")
	}
	return rsp[14 : 14+n], rsp[14+n:], nil
}

// responseParams checks a response's header and return code and returns
// its parameter area.
func responseParams(rsp []byte) ([]byte, error) {
	params, _, err := responseParts(rsp)
	return params, err
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

// rsaDecryptParams are the parameters of TPM2_RSA_Decrypt(cipherText,
// scheme NULL, no label): raw RSA with the private key.
func rsaDecryptParams(em []byte) []byte {
	params := append2B(make([]byte, 0, 2+len(em)+4), em)
	params = binary.BigEndian.AppendUint16(params, uint16(tpm2.TPMAlgNull)) // inScheme
	return binary.BigEndian.AppendUint16(params, 0)                         // label
}

// signParams are the parameters of TPM2_Sign(digest, scheme with hash,
// NULL ticket).
func signParams(digest []byte, scheme tpm2.TPMIAlgSigScheme, hash tpm2.TPMIAlgHash) []byte {
	params := append2B(make([]byte, 0, 2+len(digest)+12), digest)
	params = binary.BigEndian.AppendUint16(params, uint16(scheme))
	params = binary.BigEndian.AppendUint16(params, uint16(hash))
	params = binary.BigEndian.AppendUint16(params, uint16(tpm2.TPMSTHashCheck))
	params = binary.BigEndian.AppendUint32(params, uint32(tpm2.TPMRHNull))
	return binary.BigEndian.AppendUint16(params, 0) // ticket digest
}

// call runs command cc on the loaded object o, whose auth value is auth,
// and returns the response's parameters. It authorises o through the
// device's salted session, starting a new one once if the TPM lost it.
// Token holder only.
func (d *Device) call(cc tpm2.TPMCC, o *object, auth, params []byte) ([]byte, error) {
	if d.crypto.passwordAuth {
		rsp, err := d.tr.Send(command(cc, o.handle, auth, params))
		if err != nil {
			return nil, err
		}
		return responseParams(rsp)
	}
	out, err := d.callSession(cc, o, auth, params)
	if err != nil && isSessionLost(err) {
		d.log.Info("tpm: the TPM lost the signing session; starting a new one", "err", err)
		out, err = d.callSession(cc, o, auth, params)
	}
	return out, err
}

func (d *Device) callSession(cc tpm2.TPMCC, o *object, auth, params []byte) ([]byte, error) {
	pinned := o.pinned
	o.pinned = true // starting a session may load the SRK: keep o
	s, err := d.session()
	o.pinned = pinned
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, sessionNonceSize)
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("session nonce: %w", err)
	}
	cmd, err := s.command(cc, o.handle, o.name.Buffer, auth, params, nonce)
	if err != nil {
		return nil, err
	}
	rsp, err := d.tr.Send(cmd)
	if err != nil {
		d.forgetSession() // the TPM's state is unknown; the device resets
		return nil, err
	}
	out, err := s.response(cc, auth, nonce, rsp)
	if err != nil {
		if isSessionLost(err) {
			d.forgetSession()
		} else {
			d.dropSession()
		}
		return nil, err
	}
	return out, nil
}

// rsaDecrypt runs TPM2_RSA_Decrypt on a loaded key. Token holder only.
func (d *Device) rsaDecrypt(o *object, auth, em []byte) ([]byte, error) {
	params, err := d.call(tpm2.TPMCCRSADecrypt, o, auth, rsaDecryptParams(em))
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
	params, err := d.call(tpm2.TPMCCSign, o, auth, signParams(digest, tpm2.TPMAlgECDSA, hash))
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

// rsaSign runs TPM2_Sign with RSASSA or RSAPSS on a loaded key (FIPS-mode
// TPMs, which refuse raw RSA) and returns the signature. Token holder
// only.
func (d *Device) rsaSign(o *object, auth, digest []byte, scheme tpm2.TPMIAlgSigScheme, hash tpm2.TPMIAlgHash) ([]byte, error) {
	params, err := d.call(tpm2.TPMCCSign, o, auth, signParams(digest, scheme, hash))
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	if len(params) < 4 || tpm2.TPMAlgID(binary.BigEndian.Uint16(params)) != scheme {
		return nil, errors.New("sign: not a signature of the scheme asked for")
	}
	sig, _, err := read2B(params[4:])
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	return sig, nil
}
