package tpm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// recorder is a transport that keeps the command it is given and answers
// with a canned response.
type recorder struct {
	cmd []byte
	rsp []byte
}

func (r *recorder) Send(cmd []byte) ([]byte, error) {
	r.cmd = append([]byte(nil), cmd...)
	return r.rsp, nil
}
func (r *recorder) Close() error { return nil }

// The hand-built commands are byte for byte what go-tpm sends.
func TestHotPathCommandsMatchGoTPM(t *testing.T) {
	h := tpm2.TPMHandle(0x80000001)
	name := tpm2.TPM2BName{Buffer: []byte{0, 11, 1, 2, 3}}
	auth := bytes.Repeat([]byte{0xa5}, 32)
	em := bytes.Repeat([]byte{0x5a}, 256)
	digest := bytes.Repeat([]byte{7}, 64)
	success := []byte{0x80, 0x02, 0, 0, 0, 10, 0, 0, 0, 0} // go-tpm only needs it to parse

	rec := &recorder{rsp: success}
	tpm2.RSADecrypt{
		KeyHandle:  tpm2.AuthHandle{Handle: h, Name: name, Auth: tpm2.PasswordAuth(auth)},
		CipherText: tpm2.TPM2BPublicKeyRSA{Buffer: em},
		InScheme:   tpm2.TPMTRSADecrypt{Scheme: tpm2.TPMAlgNull},
	}.Execute(rec)
	if got := rsaDecryptCommand(h, auth, em); !bytes.Equal(got, rec.cmd) {
		t.Fatalf("RSA_Decrypt\n ours  %x\ngo-tpm %x", got, rec.cmd)
	}

	tpm2.Sign{
		KeyHandle: tpm2.AuthHandle{Handle: h, Name: name, Auth: tpm2.PasswordAuth(auth)},
		Digest:    tpm2.TPM2BDigest{Buffer: digest},
		InScheme: tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgECDSA,
			Details: tpm2.NewTPMUSigScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSchemeHash{HashAlg: tpm2.TPMAlgSHA512})},
		Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck, Hierarchy: tpm2.TPMRHNull},
	}.Execute(rec)
	if got := ecdsaSignCommand(h, auth, digest, tpm2.TPMAlgSHA512); !bytes.Equal(got, rec.cmd) {
		t.Fatalf("Sign\n ours  %x\ngo-tpm %x", got, rec.cmd)
	}
}

func TestHotPathResponses(t *testing.T) {
	resp := func(rc uint32, params []byte) []byte {
		b := binary.BigEndian.AppendUint16(nil, uint16(tpm2.TPMSTSessions))
		b = binary.BigEndian.AppendUint32(b, uint32(14+len(params)+5))
		b = binary.BigEndian.AppendUint32(b, rc)
		b = binary.BigEndian.AppendUint32(b, uint32(len(params)))
		b = append(b, params...)
		return append(b, 0, 0, 1, 0, 0) // password session response: nonce, attrs, hmac
	}
	d := &Device{}
	o := &object{handle: 0x80000001}
	rec := &recorder{rsp: resp(0, append2B(nil, []byte("signature")))}
	d.tr = rec
	if got, err := d.rsaDecrypt(o, nil, []byte{1}); err != nil || string(got) != "signature" {
		t.Fatalf("rsaDecrypt = %q, %v", got, err)
	}
	sig := binary.BigEndian.AppendUint16(nil, uint16(tpm2.TPMAlgECDSA))
	sig = binary.BigEndian.AppendUint16(sig, uint16(tpm2.TPMAlgSHA256))
	sig = append2B(append2B(sig, []byte("r")), []byte("ss"))
	rec.rsp = resp(0, sig)
	if r, s, err := d.ecdsaSign(o, nil, nil, tpm2.TPMAlgSHA256); err != nil || string(r) != "r" || string(s) != "ss" {
		t.Fatalf("ecdsaSign = %q %q %v", r, s, err)
	}
	// An error code comes back as a TPMRC, so errors.Is works.
	rc := binary.BigEndian.AppendUint16(nil, uint16(tpm2.TPMSTNoSessions))
	rc = binary.BigEndian.AppendUint32(rc, 10)
	rc = binary.BigEndian.AppendUint32(rc, uint32(tpm2.TPMRCObjectMemory))
	rec.rsp = rc
	if _, err := d.rsaDecrypt(o, nil, nil); !errors.Is(err, tpm2.TPMRCObjectMemory) {
		t.Fatalf("error response: %v", err)
	}
	for _, bad := range [][]byte{nil, {0x80}, resp(0, []byte{0, 9, 1}), resp(0, nil)[:12]} {
		rec.rsp = bad
		if _, err := d.rsaDecrypt(o, nil, nil); err == nil {
			t.Errorf("malformed response %x accepted", bad)
		}
		if _, _, err := d.ecdsaSign(o, nil, nil, tpm2.TPMAlgSHA256); err == nil {
			t.Errorf("malformed response %x accepted by ecdsaSign", bad)
		}
	}
}
