package tpm

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// Keys off the bus. A password session sends a key's auth value to the
// TPM as it is: someone with a probe on a discrete TPM's bus (a Raspberry
// Pi's SPI header) reads it, and with it can use the key as brokerd does.
// So the signing commands are authorised through an HMAC session salted
// to the storage root key: the auth value only enters an HMAC and the
// key of the parameter encryption, and the session key comes from a salt
// that only this TPM can decrypt. The first command parameter (the
// digest or the encoded message) is encrypted as well (AES-128-CFB).
//
// One session serves every key and every signature: an HMAC session is
// not bound to an object, and the key's auth value is mixed into each
// command's HMAC. It is started on first use (one TPM2_StartAuthSession,
// whose salt costs the TPM one ECDH), kept across signatures (continueSession),
// and dropped after any error, when the device resets (which flushes every
// session) and when the device is flushed or closed. A signature therefore
// costs the same one command as with a password, and no extra round trip.
//
// The commands are encoded by hand (see hotpath.go); a test checks them
// byte for byte against go-tpm's HMAC session.

// sessionNonceSize is the size of the nonces brokerd sends (the minimum
// the specification allows: 16 bytes).
const sessionNonceSize = 16

// sessionAttrs are the attributes of every command brokerd sends in the
// session: continueSession, and decrypt (the TPM decrypts the first
// command parameter).
const sessionAttrs = 0x21

// continueSessionAttr is the continueSession bit of TPMA_SESSION.
const continueSessionAttr = 0x01

// sessionSymmetric is the parameter encryption of the session.
var sessionSymmetric = tpm2.TPMTSymDef{
	Algorithm: tpm2.TPMAlgAES,
	KeyBits:   tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(128)),
	Mode:      tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB),
}

// authSession is a salted HMAC session brokerd keeps open on the TPM.
type authSession struct {
	handle   tpm2.TPMHandle
	key      []byte // sessionKey: KDFa(SHA-256, salt, "ATH", nonceTPM, nonceCaller)
	nonceTPM []byte // the TPM's last nonce
}

// errResponseHMAC says that a response's HMAC did not check out: it was
// changed on the way from the TPM (or the session is out of step).
var errResponseHMAC = errors.New("the TPM's response does not carry a valid session HMAC (was it changed on the bus?)")

// session returns the device's signing session, starting one if there is
// none. Token holder only.
func (d *Device) session() (*authSession, error) {
	if d.crypto.sess != nil {
		return d.crypto.sess, nil
	}
	srk, err := d.srk()
	if err != nil {
		return nil, err
	}
	kem, err := tpm2.ImportEncapsulationKey(&d.srkPub)
	if err != nil {
		return nil, fmt.Errorf("session salt key: %w", err)
	}
	salt, encSalt, err := tpm2.CreateEncryptedSalt(rand.Reader, kem)
	if err != nil {
		return nil, fmt.Errorf("session salt: %w", err)
	}
	nonce := make([]byte, sessionNonceSize)
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("session nonce: %w", err)
	}
	rsp, err := tpm2.StartAuthSession{
		TPMKey:        srk.handle,
		Bind:          tpm2.TPMRHNull,
		NonceCaller:   tpm2.TPM2BNonce{Buffer: nonce},
		EncryptedSalt: tpm2.TPM2BEncryptedSecret{Buffer: encSalt},
		SessionType:   tpm2.TPMSEHMAC,
		Symmetric:     sessionSymmetric,
		AuthHash:      tpm2.TPMAlgSHA256,
	}.Execute(d.tr)
	if err != nil {
		return nil, fmt.Errorf("start salted session: %w", err)
	}
	d.crypto.sess = &authSession{
		handle:   rsp.SessionHandle,
		key:      tpm2.KDFa(crypto.SHA256, salt, "ATH", rsp.NonceTPM.Buffer, nonce, 256),
		nonceTPM: rsp.NonceTPM.Buffer,
	}
	d.crypto.sessionsStarted++
	return d.crypto.sess, nil
}

// saltedAuth is a one-shot HMAC session that proves auth and sends the
// command's first parameter encrypted, salted to the loaded primary key
// salt: used where a secret is the parameter (TPM2_ObjectChangeAuth's new
// auth value). Without the salt, an empty auth value would make the
// encryption key public.
func saltedAuth(salt *object, auth []byte) tpm2.Session {
	return tpm2.HMAC(tpm2.TPMAlgSHA256, sessionNonceSize, tpm2.Auth(auth),
		tpm2.AESEncryption(128, tpm2.EncryptIn), tpm2.Salted(salt.handle, *salt.pub))
}

// dropSession forgets the signing session, flushing it from the TPM
// unless the TPM's state is unknown (a reset flushes it then). Token
// holder only.
func (d *Device) dropSession() {
	s := d.crypto.sess
	d.crypto.sess = nil
	if s == nil || d.dirty {
		return
	}
	d.flushHandle(s.handle)
}

// forgetSession forgets the signing session without a TPM command: the
// TPM no longer has it (it was reset, or all sessions were flushed).
func (d *Device) forgetSession() { d.crypto.sess = nil }

// command encodes command cc on the object (h, name), whose auth value is
// auth, authorised through the session with nonceCaller. The first
// parameter of params, a TPM2B, is sent encrypted.
func (s *authSession) command(cc tpm2.TPMCC, h tpm2.TPMHandle, name, auth, params, nonceCaller []byte) ([]byte, error) {
	params = append([]byte(nil), params...)
	if len(params) < 2 || 2+int(binary.BigEndian.Uint16(params)) > len(params) {
		return nil, errors.New("the first command parameter is not a TPM2B")
	}
	if err := s.cfb(params[2:2+binary.BigEndian.Uint16(params)], auth, nonceCaller, s.nonceTPM); err != nil {
		return nil, err
	}
	cp := sha256.New()
	cp.Write(binary.BigEndian.AppendUint32(nil, uint32(cc)))
	cp.Write(name)
	cp.Write(params)
	mac := s.hmac(auth, cp.Sum(nil), nonceCaller, s.nonceTPM, sessionAttrs)

	authArea := 4 + 2 + len(nonceCaller) + 1 + 2 + len(mac)
	size := 10 + 4 + 4 + authArea + len(params)
	b := make([]byte, 0, size)
	b = binary.BigEndian.AppendUint16(b, uint16(tpm2.TPMSTSessions))
	b = binary.BigEndian.AppendUint32(b, uint32(size))
	b = binary.BigEndian.AppendUint32(b, uint32(cc))
	b = binary.BigEndian.AppendUint32(b, uint32(h))
	b = binary.BigEndian.AppendUint32(b, uint32(authArea))
	b = binary.BigEndian.AppendUint32(b, uint32(s.handle))
	b = append2B(b, nonceCaller)
	b = append(b, sessionAttrs)
	b = append2B(b, mac)
	return append(b, params...), nil
}

// response checks a response to a command sent with command (same cc,
// auth and nonceCaller): its return code, its session HMAC, and returns
// its parameter area. It moves the session to the TPM's new nonce.
func (s *authSession) response(cc tpm2.TPMCC, auth, nonceCaller, rsp []byte) ([]byte, error) {
	params, area, err := responseParts(rsp)
	if err != nil {
		return nil, err
	}
	nonceTPM, rest, err := read2B(area)
	if err != nil || len(rest) < 1 {
		return nil, errors.New("malformed TPM response: session area")
	}
	attrs := rest[0]
	mac, rest, err := read2B(rest[1:])
	if err != nil || len(rest) != 0 {
		return nil, errors.New("malformed TPM response: session area")
	}
	rp := sha256.New()
	rp.Write(make([]byte, 4)) // TPM_RC_SUCCESS
	rp.Write(binary.BigEndian.AppendUint32(nil, uint32(cc)))
	rp.Write(params)
	if !hmac.Equal(mac, s.hmac(auth, rp.Sum(nil), nonceTPM, nonceCaller, attrs)) {
		return nil, errResponseHMAC
	}
	s.nonceTPM = append([]byte(nil), nonceTPM...)
	if attrs&continueSessionAttr == 0 {
		return nil, errors.New("the TPM ended the session")
	}
	return params, nil
}

// hmac is the session HMAC of Part 1, 19.6: HMAC over the command's or
// response's parameter hash, the two nonces (newer first) and the
// session attributes, keyed with the session key and the object's auth
// value.
func (s *authSession) hmac(auth, pHash, nonceNewer, nonceOlder []byte, attrs byte) []byte {
	m := hmac.New(sha256.New, append(append([]byte(nil), s.key...), trimAuth(auth)...))
	m.Write(pHash)
	m.Write(nonceNewer)
	m.Write(nonceOlder)
	m.Write([]byte{attrs})
	return m.Sum(nil)
}

// cfb encrypts data in place with the session's AES-128-CFB parameter
// encryption (Part 1, 21.4): key and IV from KDFa over the session key
// and the object's auth value.
func (s *authSession) cfb(data, auth, nonceNewer, nonceOlder []byte) error {
	kiv := tpm2.KDFa(crypto.SHA256, append(append([]byte(nil), s.key...), trimAuth(auth)...), "CFB", nonceNewer, nonceOlder, (16+aes.BlockSize)*8)
	block, err := aes.NewCipher(kiv[:16])
	if err != nil {
		return fmt.Errorf("parameter encryption: %w", err)
	}
	//lint:ignore SA1019 TPM parameter encryption is AES-CFB by specification (TPM 2.0 Part 1, 21.4); the session HMAC authenticates it.
	cipher.NewCFBEncrypter(block, kiv[16:]).XORKeyStream(data, data)
	return nil
}

// trimAuth drops trailing zero bytes of an auth value, as the TPM does
// before using it as an HMAC key (Part 1, 19.6.5).
func trimAuth(auth []byte) []byte {
	for len(auth) > 0 && auth[len(auth)-1] == 0 {
		auth = auth[:len(auth)-1]
	}
	return auth
}

// isSessionLost reports whether a command failed because the TPM no
// longer knows the session (another client flushed it, the TPM
// restarted): the command may be sent again in a new session. Failed
// authorisations are not among them.
func isSessionLost(err error) bool {
	if errors.Is(err, tpm2.TPMRCAuthFail) || errors.Is(err, tpm2.TPMRCBadAuth) {
		return false
	}
	for rc := tpm2.TPMRCReferenceS0; rc <= tpm2.TPMRCReferenceS0+6; rc++ {
		if errors.Is(err, rc) {
			return true
		}
	}
	var f tpm2.TPMFmt1Error
	if errors.As(err, &f) {
		isSession, _ := f.Session()
		return isSession
	}
	return false
}
