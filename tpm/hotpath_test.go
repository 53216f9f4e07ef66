package tpm

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
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

var (
	hotHandle = tpm2.TPMHandle(0x80000001)
	hotName   = tpm2.TPM2BName{Buffer: append([]byte{0, 11}, bytes.Repeat([]byte{3}, 32)...)}
	hotAuth   = bytes.Repeat([]byte{0xa5}, 32)
	hotEM     = bytes.Repeat([]byte{0x5a}, 256)
	hotDigest = bytes.Repeat([]byte{7}, 32)
)

// goTPMCommands are the signing path's commands as go-tpm builds them,
// with the authorisation auth, keyed by what they are.
func goTPMCommands(auth tpm2.Session) map[string]struct {
	run    func(t transport.TPM) error
	cc     tpm2.TPMCC
	params []byte
} {
	key := tpm2.AuthHandle{Handle: hotHandle, Name: hotName, Auth: auth}
	type cmd = struct {
		run    func(t transport.TPM) error
		cc     tpm2.TPMCC
		params []byte
	}
	sign := func(scheme tpm2.TPMIAlgSigScheme, hash tpm2.TPMIAlgHash) cmd {
		return cmd{func(t transport.TPM) error {
			_, err := tpm2.Sign{
				KeyHandle:  key,
				Digest:     tpm2.TPM2BDigest{Buffer: hotDigest},
				InScheme:   tpm2.TPMTSigScheme{Scheme: scheme, Details: tpm2.NewTPMUSigScheme(scheme, &tpm2.TPMSSchemeHash{HashAlg: hash})},
				Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck, Hierarchy: tpm2.TPMRHNull},
			}.Execute(t)
			return err
		}, tpm2.TPMCCSign, signParams(hotDigest, scheme, hash)}
	}
	return map[string]cmd{
		"RSA_Decrypt": {func(t transport.TPM) error {
			_, err := tpm2.RSADecrypt{
				KeyHandle:  key,
				CipherText: tpm2.TPM2BPublicKeyRSA{Buffer: hotEM},
				InScheme:   tpm2.TPMTRSADecrypt{Scheme: tpm2.TPMAlgNull},
			}.Execute(t)
			return err
		}, tpm2.TPMCCRSADecrypt, rsaDecryptParams(hotEM)},
		"Sign ECDSA-SHA256":  sign(tpm2.TPMAlgECDSA, tpm2.TPMAlgSHA256),
		"Sign RSASSA-SHA512": sign(tpm2.TPMAlgRSASSA, tpm2.TPMAlgSHA512),
		"Sign RSAPSS-SHA256": sign(tpm2.TPMAlgRSAPSS, tpm2.TPMAlgSHA256),
	}
}

// The hand-built commands with a password session are byte for byte
// what go-tpm sends.
func TestHotPathPasswordCommandsMatchGoTPM(t *testing.T) {
	t.Parallel()
	success := []byte{0x80, 0x02, 0, 0, 0, 10, 0, 0, 0, 0} // go-tpm only needs it to parse
	for name, c := range goTPMCommands(tpm2.PasswordAuth(hotAuth)) {
		rec := &recorder{rsp: success}
		c.run(rec)
		if got := command(c.cc, hotHandle, hotAuth, c.params); !bytes.Equal(got, rec.cmd) {
			t.Errorf("%s\n ours  %x\ngo-tpm %x", name, got, rec.cmd)
		}
	}
}

// fakeTPM plays the TPM's side of a salted HMAC session for go-tpm: it
// owns the private half of the salt key, so it learns the session key.
type fakeTPM struct {
	t        *testing.T
	saltKey  *rsa.PrivateKey
	sess     *authSession // the TPM's view
	lastCmd  []byte
	lastRsp  []byte
	lastSent []byte // nonceCaller of the last command
}

const fakeSessionHandle = tpm2.TPMHandle(0x02000000)

func (f *fakeTPM) Send(cmd []byte) ([]byte, error) {
	f.lastCmd = append([]byte(nil), cmd...)
	cc := tpm2.TPMCC(binary.BigEndian.Uint32(cmd[6:10]))
	switch {
	case cc == tpm2.TPMCCStartAuthSession:
		f.lastRsp = f.startSession(cmd)
		return f.lastRsp, nil
	case tpm2.TPMST(binary.BigEndian.Uint16(cmd)) == tpm2.TPMSTNoSessions: // FlushContext
		return []byte{0x80, 0x01, 0, 0, 0, 10, 0, 0, 0, 0}, nil
	}
	// handle, authorization size, session handle, then nonceCaller.
	nonceCaller, rest, err := read2B(cmd[10+4+4+4:])
	if err != nil {
		f.t.Fatal(err)
	}
	if len(rest) == 0 || rest[0] != sessionAttrs {
		f.t.Fatalf("session attributes %x, want continueSession|decrypt", rest)
	}
	f.lastSent = nonceCaller
	// The answer: a message for RSA_Decrypt, a signature of the scheme
	// asked for for Sign.
	params := append2B(nil, []byte("msg"))
	if cc == tpm2.TPMCCSign {
		_, rest, _ := read2B(cmd[10+4+4+binary.BigEndian.Uint32(cmd[14:18]):]) // the digest
		params = append([]byte(nil), rest[:4]...)                              // scheme, hash
		if tpm2.TPMAlgID(binary.BigEndian.Uint16(rest)) == tpm2.TPMAlgECDSA {
			params = append2B(params, []byte("r"))
		}
		params = append2B(params, []byte("s"))
	}
	f.lastRsp = f.respond(cc, nonceCaller, params, continueSessionAttr)
	return f.lastRsp, nil
}

func (f *fakeTPM) Close() error { return nil }

// startSession answers TPM2_StartAuthSession(tpmKey, bind, nonceCaller,
// encryptedSalt, ...) and derives the session key as a TPM does.
func (f *fakeTPM) startSession(cmd []byte) []byte {
	nonceCaller, rest, err := read2B(cmd[10+4+4:])
	if err != nil {
		f.t.Fatal(err)
	}
	encSalt, _, err := read2B(rest)
	if err != nil {
		f.t.Fatal(err)
	}
	salt, err := rsa.DecryptOAEP(sha256.New(), nil, f.saltKey, encSalt, []byte("SECRET\x00"))
	if err != nil {
		f.t.Fatalf("decrypt salt: %v", err)
	}
	nonceTPM := bytes.Repeat([]byte{0x11}, 16)
	f.sess = &authSession{handle: fakeSessionHandle, key: tpm2.KDFa(crypto.SHA256, salt, "ATH", nonceTPM, nonceCaller, 256), nonceTPM: nonceTPM}
	b := binary.BigEndian.AppendUint16(nil, uint16(tpm2.TPMSTNoSessions))
	b = binary.BigEndian.AppendUint32(b, uint32(10+4+2+len(nonceTPM)))
	b = binary.BigEndian.AppendUint32(b, 0)
	b = binary.BigEndian.AppendUint32(b, uint32(fakeSessionHandle))
	return append2B(b, nonceTPM)
}

// respond builds a successful response in the session, with a new nonce.
func (f *fakeTPM) respond(cc tpm2.TPMCC, nonceCaller, params []byte, attrs byte) []byte {
	nonceTPM := make([]byte, 16)
	rand.Read(nonceTPM)
	rp := sha256.New()
	rp.Write(make([]byte, 4))
	rp.Write(binary.BigEndian.AppendUint32(nil, uint32(cc)))
	rp.Write(params)
	mac := f.sess.hmac(hotAuth, rp.Sum(nil), nonceTPM, nonceCaller, attrs)
	f.sess.nonceTPM = nonceTPM
	area := append2B(nil, nonceTPM)
	area = append2B(append(area, attrs), mac)
	b := binary.BigEndian.AppendUint16(nil, uint16(tpm2.TPMSTSessions))
	b = binary.BigEndian.AppendUint32(b, uint32(10+4+len(params)+len(area)))
	b = binary.BigEndian.AppendUint32(b, 0)
	b = binary.BigEndian.AppendUint32(b, uint32(len(params)))
	return append(append(b, params...), area...)
}

// The hand-built commands in the salted session are byte for byte what
// go-tpm sends in its own salted HMAC session with parameter encryption,
// command after command (the nonces roll), and both accept the same
// responses.
func TestHotPathSessionCommandsMatchGoTPM(t *testing.T) {
	t.Parallel()
	saltKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	saltPub := tpm2.RSASRKTemplate
	saltPub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: saltKey.N.Bytes()})
	f := &fakeTPM{t: t, saltKey: saltKey}
	goSess, closer, err := tpm2.HMACSession(f, tpm2.TPMAlgSHA256, sessionNonceSize, tpm2.Auth(hotAuth),
		tpm2.AESEncryption(128, tpm2.EncryptIn), tpm2.Salted(0x80000000, saltPub))
	if err != nil {
		t.Fatal(err)
	}
	defer closer()
	// Ours starts from the TPM's view: the same handle, key and nonce.
	ours := &authSession{handle: f.sess.handle, key: f.sess.key, nonceTPM: f.sess.nonceTPM}
	for range 2 { // twice: the second round runs on rolled nonces
		for name, c := range goTPMCommands(goSess) {
			if err := c.run(f); err != nil {
				t.Fatalf("%s: go-tpm refused the response our session HMAC made: %v", name, err)
			}
			got, err := ours.command(c.cc, hotHandle, hotName.Buffer, hotAuth, c.params, f.lastSent)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, f.lastCmd) {
				t.Fatalf("%s\n ours  %x\ngo-tpm %x", name, got, f.lastCmd)
			}
			if _, err := ours.response(c.cc, hotAuth, f.lastSent, f.lastRsp); err != nil {
				t.Fatalf("%s: a response go-tpm accepted: %v", name, err)
			}
			if bytes.Contains(got, hotAuth[:8]) || bytes.Contains(got, hotDigest) || bytes.Contains(got, hotEM[:16]) {
				t.Fatalf("%s: the auth value or the first parameter is in clear: %x", name, got)
			}
		}
	}
}

// A response whose HMAC does not check out, one a TPM ended the session
// with, and an error are refused.
func TestHotPathSessionResponses(t *testing.T) {
	t.Parallel()
	f := &fakeTPM{t: t, sess: &authSession{handle: fakeSessionHandle, key: bytes.Repeat([]byte{9}, 32), nonceTPM: bytes.Repeat([]byte{1}, 16)}}
	ours := &authSession{handle: f.sess.handle, key: f.sess.key, nonceTPM: f.sess.nonceTPM}
	nonce := bytes.Repeat([]byte{2}, 16)
	rsp := f.respond(tpm2.TPMCCSign, nonce, []byte("\x00\x02ok"), continueSessionAttr)
	if params, err := ours.response(tpm2.TPMCCSign, hotAuth, nonce, rsp); err != nil || string(params) != "\x00\x02ok" {
		t.Fatalf("good response: %q, %v", params, err)
	}
	if !bytes.Equal(ours.nonceTPM, f.sess.nonceTPM) {
		t.Fatal("the session did not move to the TPM's new nonce")
	}
	rsp = f.respond(tpm2.TPMCCSign, nonce, []byte("\x00\x02ok"), continueSessionAttr)
	bad := append([]byte(nil), rsp...)
	bad[15] ^= 1 // in the parameters
	if _, err := ours.response(tpm2.TPMCCSign, hotAuth, nonce, bad); !errors.Is(err, errResponseHMAC) {
		t.Fatalf("changed response: %v", err)
	}
	if _, err := ours.response(tpm2.TPMCCRSADecrypt, hotAuth, nonce, rsp); !errors.Is(err, errResponseHMAC) {
		t.Fatalf("response to another command: %v", err)
	}
	ended := f.respond(tpm2.TPMCCSign, nonce, []byte("\x00\x02ok"), 0)
	if _, err := ours.response(tpm2.TPMCCSign, hotAuth, nonce, ended); err == nil {
		t.Fatal("a response without continueSession was accepted")
	}
	rc := binary.BigEndian.AppendUint16(nil, uint16(tpm2.TPMSTNoSessions))
	rc = binary.BigEndian.AppendUint32(rc, 10)
	rc = binary.BigEndian.AppendUint32(rc, uint32(tpm2.TPMRCReferenceS0))
	if _, err := ours.response(tpm2.TPMCCSign, hotAuth, nonce, rc); !isSessionLost(err) {
		t.Fatalf("TPM_RC_REFERENCE_S0: %v, want a lost session", err)
	}
}

func TestHotPathResponses(t *testing.T) {
	t.Parallel()
	resp := func(rc uint32, params []byte) []byte {
		b := binary.BigEndian.AppendUint16(nil, uint16(tpm2.TPMSTSessions))
		b = binary.BigEndian.AppendUint32(b, uint32(14+len(params)+5))
		b = binary.BigEndian.AppendUint32(b, rc)
		b = binary.BigEndian.AppendUint32(b, uint32(len(params)))
		b = append(b, params...)
		return append(b, 0, 0, 1, 0, 0) // password session response: nonce, attrs, hmac
	}
	d := &Device{crypto: cryptoState{passwordAuth: true}}
	o := &object{handle: 0x80000001}
	rec := &recorder{rsp: resp(0, append2B(nil, []byte("signature")))}
	d.tr = &retryTransport{tr: rec, to: timeouts{command: time.Second}, log: slog.New(slog.DiscardHandler)}
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
