package tpm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// maxPCR is the highest PCR index a PC-client TPM has.
const maxPCR = 23

// Seal stores a secret of at most 128 bytes in a TPM sealed-data object
// under the storage root key. With pcrs, unsealing also requires those
// SHA-256 PCRs to hold the values they hold now (PCRWarnings says what
// changes them). The secret travels to the TPM encrypted (salted
// session). The object has been unsealed, and gave back the secret,
// before it is returned.
func (d *Device) Seal(ctx context.Context, secret []byte, pcrs []int) (KeyBlob, error) {
	if len(secret) == 0 || len(secret) > 128 {
		return KeyBlob{}, fmt.Errorf("tpm: seal: secret of %d bytes (want 1 to 128)", len(secret))
	}
	sel, err := pcrSelection(pcrs)
	if err != nil {
		return KeyBlob{}, fmt.Errorf("tpm: seal: %w", err)
	}
	auth, err := newAuth()
	if err != nil {
		return KeyBlob{}, err
	}
	tmpl := tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgKeyedHash,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM:     true,
			FixedParent:  true,
			NoDA:         true,
			UserWithAuth: len(pcrs) == 0,
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
			Scheme: tpm2.TPMTKeyedHashScheme{Scheme: tpm2.TPMAlgNull},
		}),
	}
	var blob KeyBlob
	err = d.doChecked(ctx, ClassAPI, func() error {
		if len(pcrs) > 0 {
			policy, err := d.pcrPolicy(sel)
			if err != nil {
				return err
			}
			tmpl.AuthPolicy = tpm2.TPM2BDigest{Buffer: policy}
		}
		blob, err = d.createChild(tmpl, tpm2.TPMSSensitiveCreate{
			UserAuth: tpm2.TPM2BAuth{Buffer: auth},
			Data:     tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: secret}),
		})
		if err != nil {
			return err
		}
		blob.PCRs = slices.Clone(pcrs)
		got, err := d.unseal(blob)
		if err != nil {
			return fmt.Errorf("test unseal: %w", err)
		}
		defer clear(got)
		if subtle.ConstantTimeCompare(got, secret) != 1 {
			return errors.New("test unseal: the TPM gave back another secret")
		}
		return nil
	})
	if err != nil {
		return KeyBlob{}, fmt.Errorf("tpm: seal: %w", err)
	}
	return blob, nil
}

// Unseal returns the secret of a sealed-data object. The secret travels
// back encrypted (salted session).
func (d *Device) Unseal(ctx context.Context, blob KeyBlob) ([]byte, error) {
	var secret []byte
	err := d.doChecked(ctx, ClassAPI, func() error {
		var err error
		secret, err = d.unseal(blob)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("tpm: unseal: %w", err)
	}
	return secret, nil
}

// unseal loads a sealed-data object, unseals it and flushes it. Token
// holder only.
func (d *Device) unseal(blob KeyBlob) ([]byte, error) {
	k, err := ParseKeyBlob(blob)
	if err != nil {
		return nil, err
	}
	if k.pub.Type != tpm2.TPMAlgKeyedHash {
		return nil, errors.New("not a sealed-data object")
	}
	sel, err := pcrSelection(blob.PCRs)
	if err != nil {
		return nil, err
	}
	var secret []byte
	err = func() error {
		o, err := d.load(k)
		if err != nil {
			return err
		}
		// Sealed objects are used once, at start: do not keep them loaded.
		defer d.forget(k)
		srk, err := d.srk()
		if err != nil {
			return err
		}
		// The secret comes back encrypted under a salted session.
		opts := []tpm2.AuthOption{tpm2.Auth(blob.Auth), tpm2.AESEncryption(128, tpm2.EncryptOut), tpm2.Salted(srk.handle, d.srkPub)}
		sess := tpm2.HMAC(tpm2.TPMAlgSHA256, 16, opts...)
		if len(blob.PCRs) > 0 {
			sess = tpm2.Policy(tpm2.TPMAlgSHA256, 16, func(t transport.TPM, h tpm2.TPMISHPolicy, _ tpm2.TPM2BNonce) error {
				if _, err := (tpm2.PolicyPCR{PolicySession: h, Pcrs: sel}).Execute(t); err != nil {
					return err
				}
				_, err := tpm2.PolicyAuthValue{PolicySession: h}.Execute(t)
				return err
			}, opts...)
		}
		rsp, err := tpm2.Unseal{ItemHandle: tpm2.AuthHandle{Handle: o.handle, Name: o.name, Auth: sess}}.Execute(d.tr)
		if err != nil {
			if errors.Is(err, tpm2.TPMRCPolicyFail) || errors.Is(err, tpm2.TPMRCValue) {
				return fmt.Errorf("the PCRs %v no longer hold the values the key was sealed to: %w", blob.PCRs, err)
			}
			return err
		}
		secret = rsp.OutData.Buffer
		return nil
	}()
	return secret, err
}

// pcrPolicy computes PolicyPCR(current values of sel) then
// PolicyAuthValue, from the PCR values the TPM actually returned.
func (d *Device) pcrPolicy(sel tpm2.TPMLPCRSelection) ([]byte, error) {
	values, err := d.readPCRs(sel)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	for _, v := range values {
		h.Write(v)
	}
	calc, err := tpm2.NewPolicyCalculator(tpm2.TPMAlgSHA256)
	if err != nil {
		return nil, err
	}
	if err := (tpm2.PolicyPCR{PcrDigest: tpm2.TPM2BDigest{Buffer: h.Sum(nil)}, Pcrs: sel}).Update(calc); err != nil {
		return nil, err
	}
	if err := (tpm2.PolicyAuthValue{}).Update(calc); err != nil {
		return nil, err
	}
	return calc.Hash().Digest, nil
}

// pcrReadTries bounds how often readPCRs starts over when the PCRs change
// while it reads them.
const pcrReadTries = 3

// readPCRs returns the values of the SHA-256 PCRs of sel, in the order
// PolicyPCR hashes them (ascending index). A TPM returns at most eight
// digests per TPM2_PCR_Read, and says in pcrSelectionOut which: the PCRs
// are read in rounds until every one has come back, and a round that
// brings none (a bank or PCR the TPM lacks) is an error, never a policy
// over fewer PCRs than asked. Rounds that see different PCR update
// counters start over. Token holder only.
func (d *Device) readPCRs(sel tpm2.TPMLPCRSelection) ([][]byte, error) {
	want := selectedPCRs(sel)
	for range pcrReadTries {
		values := map[int][]byte{}
		var counter uint32
		changed := false
		for round := 0; len(values) < len(want) && !changed; round++ {
			var missing []int
			for _, p := range want {
				if values[p] == nil {
					missing = append(missing, p)
				}
			}
			rest, _ := pcrSelection(missing)
			rsp, err := tpm2.PCRRead{PCRSelectionIn: rest}.Execute(d.tr)
			if err != nil {
				return nil, fmt.Errorf("read PCRs: %w", err)
			}
			got := selectedPCRs(rsp.PCRSelectionOut)
			if len(got) != len(rsp.PCRValues.Digests) {
				return nil, fmt.Errorf("read PCRs: the TPM returned %d values for the %d PCRs it says it read", len(rsp.PCRValues.Digests), len(got))
			}
			changed = round > 0 && rsp.PCRUpdateCounter != counter
			counter = rsp.PCRUpdateCounter
			before := len(values)
			for i, p := range got {
				if slices.Contains(missing, p) {
					values[p] = rsp.PCRValues.Digests[i].Buffer
				}
			}
			if len(values) == before {
				return nil, fmt.Errorf("read PCRs: the TPM returned none of SHA-256 PCRs %v: it lacks the SHA-256 bank or these PCRs", missing)
			}
		}
		if changed {
			continue
		}
		out := make([][]byte, len(want))
		for i, p := range want {
			out[i] = values[p]
		}
		return out, nil
	}
	return nil, errors.New("read PCRs: they kept changing while being read")
}

// selectedPCRs lists the SHA-256 PCRs a selection names, in ascending
// order (the order of the values TPM2_PCR_Read returns for them).
func selectedPCRs(sel tpm2.TPMLPCRSelection) []int {
	var out []int
	for _, s := range sel.PCRSelections {
		if s.Hash != tpm2.TPMAlgSHA256 {
			continue
		}
		for i, b := range s.PCRSelect {
			for j := range 8 {
				if b&(1<<j) != 0 {
					out = append(out, 8*i+j)
				}
			}
		}
	}
	return out
}

func pcrSelection(pcrs []int) (tpm2.TPMLPCRSelection, error) {
	var idx []uint
	for _, p := range pcrs {
		if p < 0 || p > maxPCR {
			return tpm2.TPMLPCRSelection{}, fmt.Errorf("PCR %d out of range 0..%d", p, maxPCR)
		}
		idx = append(idx, uint(p))
	}
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
		Hash:      tpm2.TPMAlgSHA256,
		PCRSelect: tpm2.PCClientCompatible.PCRs(idx...),
	}}}, nil
}

// SealedKey is a private key the TPM cannot hold (RSA-4096, P-521): its
// PKCS #8 form encrypted with AES-256-GCM under a key that the TPM seals.
// It is decrypted into memory only, and signs on all cores.
type SealedKey struct {
	Seal       KeyBlob `json:"seal"`
	Ciphertext []byte  `json:"ciphertext"` // nonce || AES-256-GCM(PKCS #8)
}

// SealKey encrypts priv under a fresh key sealed by the TPM.
func (d *Device) SealKey(ctx context.Context, priv crypto.Signer, pcrs []int) (*SealedKey, error) {
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("tpm: seal key: %w", err)
	}
	defer clear(der)
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("tpm: seal key: %w", err)
	}
	defer clear(key)
	blob, err := d.Seal(ctx, key, pcrs)
	if err != nil {
		return nil, err
	}
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("tpm: seal key: %w", err)
	}
	sk := &SealedKey{Seal: blob, Ciphertext: aead.Seal(nonce, nonce, der, blob.Public)}
	// Seal unsealed the key-encryption key; check its half here too.
	back, err := aead.Open(nil, nonce, sk.Ciphertext[len(nonce):], blob.Public)
	if err != nil || !bytes.Equal(back, der) {
		return nil, errors.New("tpm: seal key: the encrypted key does not decrypt to itself")
	}
	clear(back)
	return sk, nil
}

// UnsealKey returns the private key of a SealedKey, in memory only.
func (d *Device) UnsealKey(ctx context.Context, sk *SealedKey) (crypto.Signer, error) {
	key, err := d.Unseal(ctx, sk.Seal)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	n := aead.NonceSize()
	if len(sk.Ciphertext) < n {
		return nil, errors.New("tpm: unseal key: ciphertext too short")
	}
	der, err := aead.Open(nil, sk.Ciphertext[:n], sk.Ciphertext[n:], sk.Seal.Public)
	if err != nil {
		return nil, fmt.Errorf("tpm: unseal key: decrypt: %w", err)
	}
	defer clear(der)
	priv, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("tpm: unseal key: %w", err)
	}
	signer, ok := priv.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("tpm: unseal key: %T is not a signing key", priv)
	}
	return signer, nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("tpm: aes: %w", err)
	}
	return cipher.NewGCM(block)
}
