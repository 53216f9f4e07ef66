package tpm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// Parent names the storage key a key blob is wrapped under.
type Parent string

// Parents.
const (
	// ParentSRK is the storage root key (ECC P-256, owner hierarchy).
	ParentSRK Parent = "srk"
	// ParentECCEK is the default ECC P-256 endorsement key.
	ParentECCEK Parent = "ek-ecc"
	// ParentRSAEK is the default RSA-2048 endorsement key.
	ParentRSAEK Parent = "ek-rsa"
)

// authSize is the size of the random auth value every key gets: as long as
// the name algorithm's digest (SHA-256), the most a TPM accepts.
const authSize = 32

// KeyBlob is the persistent form of a TPM object: its public area, its
// private area encrypted by the TPM under Parent, and its auth value. It can
// be stored anywhere; only the TPM that made it can load it.
type KeyBlob struct {
	Parent Parent `json:"parent"`
	// ParentName is the Name of the parent the blob was made under (empty
	// in blobs made before it was kept): a blob under another TPM's
	// parent is refused as such, one under this TPM's that does not load
	// is damaged.
	ParentName []byte `json:"parent_name,omitempty"`
	Public     []byte `json:"public"`  // TPMT_PUBLIC
	Private    []byte `json:"private"` // TPM2B_PRIVATE contents
	Auth       []byte `json:"auth"`
	PCRs       []int  `json:"pcrs,omitempty"` // sealed objects bound to SHA-256 PCRs
}

// Key is a KeyBlob parsed and ready to load.
type Key struct {
	blob    KeyBlob
	pub     tpm2.TPMTPublic
	name    tpm2.TPM2BName
	public  crypto.PublicKey // nil for sealed objects
	alg     Algorithm
	cacheID string
}

// ParseKeyBlob checks a blob's public area. It does not touch the TPM.
func ParseKeyBlob(b KeyBlob) (*Key, error) {
	switch b.Parent {
	case ParentSRK, ParentECCEK, ParentRSAEK:
	default:
		return nil, fmt.Errorf("tpm: key blob: unknown parent %q", b.Parent)
	}
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](b.Public)
	if err != nil {
		return nil, fmt.Errorf("tpm: key blob: %w: public area: %w", ErrCorruptBlob, err)
	}
	name, err := tpm2.ObjectName(pub)
	if err != nil {
		return nil, fmt.Errorf("tpm: key blob: %w: name: %w", ErrCorruptBlob, err)
	}
	// The same key imported twice has one Name but two private blobs with
	// different auth values: the cache tells loaded objects apart by blob.
	sum := sha256.Sum256(b.Private)
	k := &Key{blob: b, pub: *pub, name: *name, cacheID: string(b.Parent) + ":" + hex.EncodeToString(sum[:])}
	if pub.Type != tpm2.TPMAlgKeyedHash {
		if k.public, err = tpm2.Pub(*pub); err != nil {
			return nil, fmt.Errorf("tpm: key blob: %w: public key: %w", ErrCorruptBlob, err)
		}
		if k.alg, err = AlgorithmOf(k.public); err != nil {
			return nil, fmt.Errorf("tpm: key blob: %w", err)
		}
	}
	return k, nil
}

// Blob returns the key's blob.
func (k *Key) Blob() KeyBlob { return k.blob }

// Public returns the key's public key.
func (k *Key) Public() crypto.PublicKey { return k.public }

// Algorithm returns the key's algorithm.
func (k *Key) Algorithm() Algorithm { return k.alg }

// Attributes returns the object attributes and, for RSA keys, the scheme
// of the key's public area; tests use it to check how keys are made.
func (k *Key) Attributes() (tpm2.TPMAObject, tpm2.TPMAlgID) {
	scheme := tpm2.TPMAlgNull
	if d, err := k.pub.Parameters.RSADetail(); err == nil {
		scheme = d.Scheme.Scheme
	}
	return k.pub.ObjectAttributes, scheme
}

// String identifies the key in errors by its parent and Name.
func (k *Key) String() string {
	n := nameHex(k.name)
	if len(n) > 16 {
		n = n[:16]
	}
	return string(k.blob.Parent) + "/" + n
}

// newAuth returns a random auth value with no zero byte. go-tpm v0.9.8
// derives HMAC-session keys from an auth value cut at its first zero byte
// (hmacKeyFromAuthValue trims every zero, not only trailing ones, as Part 1
// 19.6.5 asks), so one in eight random values would fail in HMAC and policy
// sessions. Redrawing zeros keeps 255.8 bits of entropy.
func newAuth() ([]byte, error) {
	auth := make([]byte, authSize)
	if _, err := rand.Read(auth); err != nil {
		return nil, fmt.Errorf("tpm: random auth value: %w", err)
	}
	var b [1]byte
	for i := range auth {
		for auth[i] == 0 {
			if _, err := rand.Read(b[:]); err != nil {
				return nil, fmt.Errorf("tpm: random auth value: %w", err)
			}
			auth[i] = b[0]
		}
	}
	return auth, nil
}

// encryptedParent is an HMAC session on the SRK (empty auth) that encrypts
// the first command parameter, so key material and auth values sent to the
// TPM do not cross the bus in the clear.
func (d *Device) encryptedParent(srk *object, dir tpm2.AuthOption) tpm2.Session {
	return tpm2.HMAC(tpm2.TPMAlgSHA256, 16, tpm2.Auth(nil), dir, tpm2.Salted(srk.handle, d.srkPub))
}

// createChild runs TPM2_Create under the storage root key, with the
// sensitive area (auth value, sealed data) sent encrypted, and returns the
// new object's blob. Token holder only.
func (d *Device) createChild(tmpl tpm2.TPMTPublic, sens tpm2.TPMSSensitiveCreate) (KeyBlob, error) {
	srk, err := d.srk()
	if err != nil {
		return KeyBlob{}, err
	}
	srk.pinned = true
	defer func() { srk.pinned = false }()
	var blob KeyBlob
	err = d.withSlot(func() error {
		rsp, err := tpm2.Create{
			ParentHandle: tpm2.AuthHandle{Handle: srk.handle, Name: srk.name,
				Auth: d.encryptedParent(srk, tpm2.AESEncryption(128, tpm2.EncryptIn))},
			InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &sens},
			InPublic:    tpm2.New2B(tmpl),
		}.Execute(d.tr)
		if err != nil {
			return err
		}
		pub, err := rsp.OutPublic.Contents()
		if err != nil {
			return err
		}
		blob = KeyBlob{Parent: ParentSRK, ParentName: srk.name.Buffer, Public: tpm2.Marshal(pub), Private: rsp.OutPrivate.Buffer, Auth: sens.UserAuth.Buffer}
		return nil
	})
	return blob, err
}

// CreateKey generates a key inside the TPM under the storage root key. Its
// private part never leaves the TPM unencrypted. The key has made a
// signature that verifies before it is returned. It fails with an error
// matching ErrUnsupported when the TPM does not hold such keys.
func (d *Device) CreateKey(ctx context.Context, alg Algorithm) (*Key, error) {
	if err := d.CheckSupport(ctx, alg); err != nil {
		return nil, fmt.Errorf("tpm: create key: %w", err)
	}
	tmpl, err := keyTemplate(alg, true)
	if err != nil {
		return nil, err
	}
	auth, err := newAuth()
	if err != nil {
		return nil, err
	}
	var blob KeyBlob
	err = d.doChecked(ctx, ClassAPI, func() error {
		blob, err = d.createChild(tmpl, tpm2.TPMSSensitiveCreate{UserAuth: tpm2.TPM2BAuth{Buffer: auth}})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("tpm: create %s key: %w", alg, err)
	}
	k, err := ParseKeyBlob(blob)
	if err != nil {
		return nil, fmt.Errorf("tpm: create %s key: %w", alg, err)
	}
	if err := d.rocaCheck("create "+string(alg)+" key", k.public); err != nil {
		return nil, fmt.Errorf("tpm: %w", err) // the blob is dropped: the key was never loaded
	}
	return d.tested(ctx, "create "+string(alg)+" key", blob)
}

// ImportKey wraps a software key for this TPM's storage root key (in Go, so
// the private key never crosses the TPM bus in the clear) and imports it.
// The result loads only on this TPM, and only with its new random auth value.
func (d *Device) ImportKey(ctx context.Context, priv crypto.PrivateKey) (*Key, error) {
	auth, err := newAuth()
	if err != nil {
		return nil, err
	}
	pub, sens, err := importable(priv, auth)
	if err != nil {
		return nil, fmt.Errorf("tpm: import key: %w", err)
	}
	alg, _ := AlgorithmOf(priv.(crypto.Signer).Public())
	if err := d.CheckSupport(ctx, alg); err != nil {
		return nil, fmt.Errorf("tpm: import key: %w", err)
	}
	w, err := wrap(d.srkPub, ParentSRK, pub, sens)
	if err != nil {
		return nil, fmt.Errorf("tpm: import key: %w", err)
	}
	var blob KeyBlob
	err = d.doChecked(ctx, ClassAPI, func() error {
		srk, auth, err := d.parent(ParentSRK)
		if err != nil {
			return err
		}
		// brokerd wrapped it for this SRK a moment ago.
		private, err := d.importUnder(srk, auth, w, true)
		if err != nil {
			return err
		}
		blob = KeyBlob{Parent: ParentSRK, ParentName: srk.name.Buffer, Public: w.Public, Private: private, Auth: sens.AuthValue.Buffer}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("tpm: import key: %w", err)
	}
	return d.tested(ctx, "import key", blob)
}

// tested parses a new key's blob and has the key sign a random digest,
// checking the signature, before the key is reported made: a key that
// cannot sign is never stored. On failure the key is flushed. op names
// the operation in errors.
func (d *Device) tested(ctx context.Context, op string, blob KeyBlob) (*Key, error) {
	k, err := ParseKeyBlob(blob)
	if err != nil {
		return nil, fmt.Errorf("tpm: %s: %w", op, err)
	}
	s, err := d.Signer(k)
	if err != nil {
		return nil, fmt.Errorf("tpm: %s: %w", op, err)
	}
	digest := make([]byte, sha256.Size)
	if _, err := rand.Read(digest); err != nil {
		return nil, fmt.Errorf("tpm: %s: %w", op, err)
	}
	// Signer checks RSA signatures itself.
	sig, err := s.SignContext(ctx, digest, crypto.SHA256)
	if pub, ok := k.public.(*ecdsa.PublicKey); ok && err == nil && !ecdsa.VerifyASN1(pub, digest, sig) {
		err = errors.New("the TPM returned a signature that does not verify")
	}
	if err != nil {
		if ferr := d.Forget(context.WithoutCancel(ctx), k); ferr != nil {
			d.log.Warn("tpm: flush a key that failed its test signature", "key", k.String(), "err", ferr)
		}
		return nil, fmt.Errorf("tpm: %s: test signature: %w", op, err)
	}
	return k, nil
}

// importUnder runs TPM2_Import of w under the loaded parent. parentKnown
// says w was made for this parent (its Name was checked), so that a blob
// that does not unwrap is known to be altered rather than another TPM's.
func (d *Device) importUnder(parent *object, auth tpm2.AuthHandle, w *WrappedKey, parentKnown bool) ([]byte, error) {
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](w.Public)
	if err != nil {
		return nil, fmt.Errorf("public area: %w", err)
	}
	parent.pinned = true
	defer func() { parent.pinned = false }()
	var private []byte
	err = d.withSlot(func() error {
		rsp, err := tpm2.Import{
			ParentHandle: auth,
			ObjectPublic: tpm2.New2B(*pub),
			Duplicate:    tpm2.TPM2BPrivate{Buffer: w.Duplicate},
			InSymSeed:    tpm2.TPM2BEncryptedSecret{Buffer: w.Seed},
			Symmetric:    tpm2.TPMTSymDef{Algorithm: tpm2.TPMAlgNull},
		}.Execute(d.tr)
		if err != nil {
			return err
		}
		private = rsp.OutPrivate.Buffer
		return nil
	})
	if err != nil {
		return nil, d.importError(err, parentKnown)
	}
	return private, nil
}

// WrappedKeyFormat identifies brokerd's wrapped-key files.
const WrappedKeyFormat = "brokerd-wrapped-key/1"

// WrappedKey is a key encrypted for one TPM's endorsement key (or storage
// root key): a TPM2_Import duplicate with an outer wrapper whose seed only
// that TPM can recover. Its JSON form is the file `brokerd key wrap` writes.
type WrappedKey struct {
	Format     string `json:"format"`
	Parent     Parent `json:"parent"`
	ParentName []byte `json:"parent_name"`
	Public     []byte `json:"public"`    // TPMT_PUBLIC
	Duplicate  []byte `json:"duplicate"` // TPM2B_PRIVATE contents
	Seed       []byte `json:"seed"`      // encrypted seed
}

// ErrNotWrappedKey is returned for a file that is no wrapped key at all.
var ErrNotWrappedKey = errors.New("not a wrapped key made by brokerd key wrap")

// ParseWrappedKey reads a wrapped-key file.
func ParseWrappedKey(data []byte) (*WrappedKey, error) {
	var w WrappedKey
	if err := json.Unmarshal(data, &w); err != nil || w.Format == "" {
		return nil, ErrNotWrappedKey
	}
	if w.Format != WrappedKeyFormat {
		return nil, fmt.Errorf("tpm: wrapped key: format %q, want %q", w.Format, WrappedKeyFormat)
	}
	switch {
	case w.Parent != ParentECCEK && w.Parent != ParentRSAEK:
		return nil, fmt.Errorf("tpm: wrapped key: parent %q is not an endorsement key", w.Parent)
	case len(w.ParentName) == 0, len(w.Public) == 0, len(w.Duplicate) == 0, len(w.Seed) == 0:
		return nil, errors.New("tpm: wrapped key: missing fields")
	}
	if err := checkImportedPublic(w.Public); err != nil {
		return nil, fmt.Errorf("tpm: wrapped key: %w", err)
	}
	return &w, nil
}

// PublicKey returns the public key of the wrapped key (no TPM needed).
func (w *WrappedKey) PublicKey() (crypto.PublicKey, error) {
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](w.Public)
	if err != nil {
		return nil, fmt.Errorf("tpm: wrapped key: %w: public area: %w", ErrCorruptBlob, err)
	}
	k, err := tpm2.Pub(*pub)
	if err != nil {
		return nil, fmt.Errorf("tpm: wrapped key: %w: public key: %w", ErrCorruptBlob, err)
	}
	return k, nil
}

// WrapKey encrypts priv for the TPM whose endorsement public key is ekPub.
// It needs no TPM: it runs on the operator's workstation, so the clear key
// never reaches the appliance. The key gets the attributes brokerd gives
// every imported key (RSA: sign+decrypt, scheme NULL), so it signs RS, PS
// and ES with SHA-256 or SHA-512 like any other.
func WrapKey(ekPub crypto.PublicKey, priv crypto.PrivateKey) (*WrappedKey, error) {
	parent, ekArea, err := ekPublicArea(ekPub)
	if err != nil {
		return nil, fmt.Errorf("tpm: wrap key: %w", err)
	}
	signer, ok := priv.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("tpm: wrap key: %w", &UnsupportedKeyError{Type: KeyType(priv)})
	}
	switch alg, err := AlgorithmOf(signer.Public()); {
	case err != nil:
		return nil, fmt.Errorf("tpm: wrap key: %w", err)
	case alg == RSA4096 || alg == P521:
		return nil, fmt.Errorf("tpm: wrap key: %s keys do not fit in a TPM; import the key on the appliance instead, where it is sealed", KeyType(signer))
	}
	// The auth value starts empty: the appliance replaces it with a fresh
	// random one right after import (TPM2_ObjectChangeAuth).
	pub, sens, err := importable(priv, nil)
	if err != nil {
		return nil, fmt.Errorf("tpm: wrap key: %w", err)
	}
	w, err := wrap(ekArea, parent, pub, sens)
	if err != nil {
		return nil, fmt.Errorf("tpm: wrap key: %w", err)
	}
	return w, nil
}

// wrap builds an import blob for the parent with public area parentArea.
func wrap(parentArea tpm2.TPMTPublic, parent Parent, pub tpm2.TPMTPublic, sens tpm2.TPMTSensitive) (*WrappedKey, error) {
	kem, err := tpm2.ImportEncapsulationKey(&parentArea)
	if err != nil {
		return nil, fmt.Errorf("parent encapsulation key: %w", err)
	}
	parentName, err := tpm2.ObjectName(&parentArea)
	if err != nil {
		return nil, fmt.Errorf("parent name: %w", err)
	}
	name, err := tpm2.ObjectName(&pub)
	if err != nil {
		return nil, fmt.Errorf("object name: %w", err)
	}
	dup, seed, err := tpm2.CreateDuplicate(rand.Reader, kem, name.Buffer, tpm2.Marshal(sens))
	if err != nil {
		return nil, fmt.Errorf("create duplicate: %w", err)
	}
	return &WrappedKey{
		Format:     WrappedKeyFormat,
		Parent:     parent,
		ParentName: parentName.Buffer,
		Public:     tpm2.Marshal(pub),
		Duplicate:  dup,
		Seed:       seed,
	}, nil
}

// EndorsementKey returns the public key of this TPM's default endorsement
// key of the given kind (ParentECCEK or ParentRSAEK).
func (d *Device) EndorsementKey(ctx context.Context, p Parent) (crypto.PublicKey, error) {
	var pub crypto.PublicKey
	err := d.do(ctx, func() error {
		ek, err := d.ek(p)
		if err != nil {
			return err
		}
		if pub, err = tpm2.Pub(*ek.pub); err != nil {
			return err
		}
		return d.rocaCheck("the RSA endorsement key", pub)
	})
	if err != nil {
		return nil, fmt.Errorf("tpm: endorsement key: %w", err)
	}
	return pub, nil
}

// ImportWrapped imports a key that `brokerd key wrap` encrypted for this
// TPM's endorsement key. The key stays a child of the EK (loading it needs
// the EK and a PolicySecret session); its auth value is replaced by a fresh
// random one, so the wrapped file alone does not authorise its use.
func (d *Device) ImportWrapped(ctx context.Context, w *WrappedKey) (*Key, error) {
	if err := checkImportedPublic(w.Public); err != nil {
		return nil, fmt.Errorf("tpm: import wrapped key: %w: %w", ErrCorruptBlob, err)
	}
	alg, err := publicAlgorithm(w.Public)
	if err != nil {
		return nil, fmt.Errorf("tpm: import wrapped key: %w", err)
	}
	if err := d.CheckSupport(ctx, alg); err != nil {
		return nil, fmt.Errorf("tpm: import wrapped key: %w", err)
	}
	newAuthValue, err := newAuth()
	if err != nil {
		return nil, err
	}
	var blob KeyBlob
	err = d.doChecked(ctx, ClassAPI, func() error {
		ek, auth, err := d.parent(w.Parent)
		if err != nil {
			return err
		}
		if nameHex(ek.name) != nameHex(tpm2.TPM2BName{Buffer: w.ParentName}) {
			return fmt.Errorf("%w: the key was wrapped for another TPM's endorsement key", ErrWrongTPM)
		}
		private, err := d.importUnder(ek, auth, w, true)
		if err != nil {
			return err
		}
		imported, err := ParseKeyBlob(KeyBlob{Parent: w.Parent, ParentName: ek.name.Buffer, Public: w.Public, Private: private})
		if err != nil {
			return err
		}
		o, err := d.load(imported)
		if err != nil {
			return err
		}
		defer d.forget(imported)
		// The new auth value is the command's first parameter: it travels
		// encrypted, in a session salted to the EK.
		rsp, err := tpm2.ObjectChangeAuth{
			ObjectHandle: tpm2.AuthHandle{Handle: o.handle, Name: o.name, Auth: saltedAuth(ek, nil)},
			ParentHandle: tpm2.NamedHandle{Handle: ek.handle, Name: ek.name},
			NewAuth:      tpm2.TPM2BAuth{Buffer: newAuthValue},
		}.Execute(d.tr)
		if err != nil {
			return fmt.Errorf("change auth value: %w", err)
		}
		blob = KeyBlob{Parent: w.Parent, ParentName: ek.name.Buffer, Public: w.Public, Private: rsp.OutPrivate.Buffer, Auth: newAuthValue}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("tpm: import wrapped key: %w", err)
	}
	return d.tested(ctx, "import wrapped key", blob)
}

// Forget flushes k from the TPM if it is loaded (after the key is deleted).
func (d *Device) Forget(ctx context.Context, k *Key) error {
	return d.do(ctx, func() error { d.forget(k); return nil })
}

// publicAlgorithm returns the algorithm of the key in a TPMT_PUBLIC.
func publicAlgorithm(public []byte) (Algorithm, error) {
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](public)
	if err != nil {
		return "", fmt.Errorf("public area: %w", err)
	}
	k, err := tpm2.Pub(*pub)
	if err != nil {
		return "", fmt.Errorf("public key: %w", err)
	}
	return AlgorithmOf(k)
}

// checkImportedPublic accepts only the public areas brokerd itself gives
// imported keys, so a wrapped file cannot smuggle in a key with other
// attributes (say, one that a policy lets others use).
func checkImportedPublic(public []byte) error {
	alg, err := publicAlgorithm(public)
	if err != nil {
		return err
	}
	pub, _ := tpm2.Unmarshal[tpm2.TPMTPublic](public)
	want, err := keyTemplate(alg, false)
	if err != nil {
		return err
	}
	want.Unique = pub.Unique
	if alg.IsRSA() {
		// Keep the key's exponent; everything else must match.
		got, _ := pub.Parameters.RSADetail()
		wantParms, _ := want.Parameters.RSADetail()
		wantParms.Exponent = got.Exponent
	}
	if !bytes.Equal(tpm2.Marshal(pub), tpm2.Marshal(&want)) {
		return errors.New("public area has attributes brokerd does not give imported keys")
	}
	return nil
}
