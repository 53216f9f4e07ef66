// Package keys is the key registry: which keys brokerd holds, under which
// names, of which storage kind, with which certificate chain, and the TPM
// blobs that make them usable. It decides whether a key lives in the TPM or
// is sealed by it, and signs with the /sign semantics of the reference
// broker (RS, PS with salt = hash length, ES as raw r||s).
//
// # Concurrency
//
// A Manager is safe for concurrent use.
package keys

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/brokerd/brokerd/internal/certs"
	"github.com/brokerd/brokerd/internal/dn"
	"github.com/brokerd/brokerd/internal/origin"
	"github.com/brokerd/brokerd/store"
	"github.com/brokerd/brokerd/tpm"
)

// Kind is how a key is stored.
type Kind string

// Storage kinds.
const (
	// KindTPM keys were generated inside the TPM and never left it.
	KindTPM Kind = "tpm"
	// KindImported keys came from a PEM file and were wrapped under the
	// TPM's storage root key: usable only on this TPM.
	KindImported Kind = "imported"
	// KindEKWrapped keys were encrypted for this TPM's endorsement key off
	// the appliance; the clear key never reached it.
	KindEKWrapped Kind = "ek-wrapped"
	// KindSealed keys are too large for the TPM (RSA-4096): encrypted under
	// a key the TPM seals, decrypted into memory only.
	KindSealed Kind = "sealed"
)

var (
	// ErrUnknownKey is returned for a name that is neither a key id nor an
	// alias.
	ErrUnknownKey = errors.New("unknown key")
	// ErrIncompatible is returned when a signature algorithm does not suit
	// the key (RS with an EC key, ES with an RSA key).
	ErrIncompatible = errors.New("algorithm incompatible with key")
	// ErrCertMismatch is returned when a certificate's public key is not
	// the key's.
	ErrCertMismatch = errors.New("certificate does not match the key")
	// ErrInvalidName is returned for a key id or alias brokerd does not
	// accept.
	ErrInvalidName = errors.New("invalid key name")
	// ErrExists is returned when a key id or alias is already taken.
	ErrExists = errors.New("key name already taken")

	// The TPM's conditions, as the keys' users see them (the tpm package's
	// sentinels, so that they need not import it).

	// ErrBusy: the TPM's queue is full or its wait budget passed; retry.
	ErrBusy = tpm.ErrBusy
	// ErrUnavailable: the TPM does not answer.
	ErrUnavailable = tpm.ErrUnavailable
	// ErrClosed: the TPM device was closed (the daemon is stopping).
	ErrClosed = tpm.ErrClosed
	// ErrWrongTPM: a key belongs to another TPM (or a cleared one).
	ErrWrongTPM = tpm.ErrWrongTPM
	// ErrUnsupported: the TPM does not implement the key's algorithm (or
	// a hash a signature needs).
	ErrUnsupported = tpm.ErrUnsupported
	// ErrCorruptBlob: a key's TPM blob was made for this TPM but was
	// altered or damaged since.
	ErrCorruptBlob = tpm.ErrCorruptBlob
	// ErrFailureMode: the TPM is in failure mode and needs a reboot.
	ErrFailureMode = tpm.ErrFailureMode
)

// ReservedPrefix starts the ids of brokerd's own keys (the TLS server key,
// the CA key): clients can never use them, operators cannot take the names.
const ReservedPrefix = "brokerd:"

// Reserved reports whether name is one of brokerd's own key names.
func Reserved(name string) bool { return strings.HasPrefix(name, ReservedPrefix) }

// metaSRKName is the meta entry binding the state to its TPM.
const metaSRKName = "tpm_srk_name"

// record is a key as the store keeps it.
type record struct {
	Kind      Kind           `json:"kind"`
	Algorithm tpm.Algorithm  `json:"algorithm"`
	Public    []byte         `json:"public"`          // PKIX DER
	Chain     [][]byte       `json:"chain,omitempty"` // DER, leaf first
	Blob      *tpm.KeyBlob   `json:"blob,omitempty"`
	Sealed    *tpm.SealedKey `json:"sealed,omitempty"`
	Created   time.Time      `json:"created"`
	Origins   []string       `json:"origins,omitempty"` // destination binding
	Purpose   Purpose        `json:"purpose,omitempty"`
	// PurposeSet: the operator set Purpose; otherwise it follows the
	// certificate.
	PurposeSet bool `json:"purpose_set,omitempty"`
	// JOSE are the key's defaults for the JWS helpers.
	JOSE JOSEDefaults `json:"jose,omitzero"`
}

// Info describes a key without its secrets.
type Info struct {
	ID        string        `json:"id"`
	Aliases   []string      `json:"aliases"`
	Kind      Kind          `json:"kind"`
	Algorithm tpm.Algorithm `json:"algorithm"`
	Created   time.Time     `json:"created"`
	// Certificate fields are empty when no certificate is attached.
	Subject   string     `json:"subject,omitempty"`
	Issuer    string     `json:"issuer,omitempty"`
	NotBefore *time.Time `json:"not_before,omitempty"`
	NotAfter  *time.Time `json:"not_after,omitempty"`
	X5tS256   string     `json:"x5t#S256,omitempty"`
	// SHA1 is the leaf's SHA-1 fingerprint (hex), which holder-of-key
	// schemes behind TLS-terminating proxies compare.
	SHA1 string `json:"sha1_fingerprint,omitempty"`
	// OrganizationID is the subject's organizationIdentifier (2.5.4.97),
	// e.g. PSDGB-FCA-123456: the PSD2 authorisation number.
	OrganizationID string `json:"organization_identifier,omitempty"`
	// QcTypes are the QcType statement's types: web (a QWAC), eseal (a
	// QSealC), esign.
	QcTypes []string `json:"qc_types,omitempty"`
	// PSD2 is the PSD2 QCStatement: roles and competent authority.
	PSD2     *certs.PSD2 `json:"psd2,omitempty"`
	ChainLen int         `json:"chain_length"`
	// Origins are the bank origins the key may be used for as a QWAC;
	// empty: any the policy allows.
	Origins []string `json:"origins,omitempty"`
	// Purpose is what the key may be used for; PurposeSet says the
	// operator set it rather than the certificate.
	Purpose    Purpose `json:"purpose"`
	PurposeSet bool    `json:"purpose_set,omitempty"`
	// JOSE are the key's defaults for the JWS helpers.
	JOSE JOSEDefaults `json:"jose,omitzero"`
	// Warnings say what can make the key unusable: for a key sealed to
	// PCRs, what changes each of them (tpm.PCRWarnings). Commands that
	// store a key show them.
	Warnings []string `json:"warnings,omitempty"`
}

// Manager is the key registry on one TPM and one state file. It keeps the
// registry in memory (loaded at Open; every change goes to the state file
// first), so lookups on the signing path touch no disk.
type Manager struct {
	dev      *tpm.Device
	st       *store.Store
	sealPCRs []int
	log      *slog.Logger

	mu      sync.RWMutex
	entries map[string]*entry // by id
	names   map[string]string // id or alias → id
}

// entry is one key in memory.
type entry struct {
	info  Info
	rec   *record
	chain []*x509.Certificate
	// signer is made on first use: sealed keys are unsealed once.
	signer crypto.Signer
}

// Options configures a Manager.
type Options struct {
	// SealPCRs binds newly sealed keys to these SHA-256 PCRs.
	SealPCRs []int
	Log      *slog.Logger
}

// Open returns the registry of st on dev. The first use binds the state to
// the TPM; later uses on another TPM fail with tpm.ErrWrongTPM.
func Open(dev *tpm.Device, st *store.Store, opts Options) (*Manager, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	srk := dev.SRKName()
	switch have, err := st.Meta(metaSRKName); {
	case errors.Is(err, store.ErrNotFound):
		if err := st.SetMeta(metaSRKName, srk); err != nil {
			return nil, fmt.Errorf("keys: bind state to TPM: %w", err)
		}
	case err != nil:
		return nil, fmt.Errorf("keys: %w", err)
	case !bytes.Equal(have, srk):
		return nil, fmt.Errorf("keys: %w: the state in %s was made with another TPM (its storage root key differs); its keys cannot be used with %s",
			tpm.ErrWrongTPM, path.Dir(st.Path()), dev.Address())
	}
	m := &Manager{dev: dev, st: st, sealPCRs: opts.SealPCRs, log: opts.Log, entries: map[string]*entry{}, names: map[string]string{}}
	all, err := st.Keys()
	if err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	for _, sr := range all {
		var rec record
		if err := json.Unmarshal(sr.Data, &rec); err != nil {
			return nil, fmt.Errorf("keys: key %q: corrupt record: %w", sr.ID, err)
		}
		if err := m.migrate(sr, &rec); err != nil {
			return nil, err
		}
		e, err := newEntry(sr.ID, sr.Aliases, &rec)
		if err != nil {
			return nil, err
		}
		m.index(e)
	}
	return m, nil
}

func newEntry(id string, aliases []string, rec *record) (*entry, error) {
	i, err := info(id, aliases, rec)
	if err != nil {
		return nil, err
	}
	chain, err := parseChain(rec.Chain)
	if err != nil {
		return nil, fmt.Errorf("keys: key %q: %w", id, err)
	}
	return &entry{info: i, rec: rec, chain: chain}, nil
}

// index adds e under its id and aliases, replacing the entry with its id.
// The caller holds m.mu (or owns m).
func (m *Manager) index(e *entry) {
	if old := m.entries[e.info.ID]; old != nil {
		for _, a := range old.info.Aliases {
			delete(m.names, a)
		}
	}
	m.entries[e.info.ID] = e
	m.names[e.info.ID] = e.info.ID
	for _, a := range e.info.Aliases {
		m.names[a] = e.info.ID
	}
}

// ValidateName checks a key id or alias. Names are what clients send as
// key_id, cert_path and key_path; they are looked up, never opened as files,
// so only control characters, spaces and the names "." and ".." are refused.
func ValidateName(name string) error {
	switch {
	case name == "", len(name) > 255:
		return fmt.Errorf("%w: %q must be 1 to 255 bytes", ErrInvalidName, name)
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: %q is not UTF-8", ErrInvalidName, name)
	case name == "." || name == "..":
		return fmt.Errorf("%w: %q", ErrInvalidName, name)
	}
	for _, r := range name {
		if unicode.IsControl(r) || unicode.IsSpace(r) {
			return fmt.Errorf("%w: %q contains a space or control character", ErrInvalidName, name)
		}
	}
	return nil
}

// CreateOptions are the optional parts of Create.
type CreateOptions struct {
	Aliases []string
	// Internal creates one of brokerd's own keys (an id with ReservedPrefix).
	Internal bool
	// CSR, when set, is the template of a certificate signing request the
	// new key signs inside the TPM.
	CSR *x509.CertificateRequest
	// Purpose, when set, fixes what the key is for; otherwise it follows
	// the certificate attached later (any until then).
	Purpose Purpose
}

// Create generates a key inside the TPM. It returns the CSR (DER) when
// opts.CSR is set.
func (m *Manager) Create(ctx context.Context, id string, alg tpm.Algorithm, opts CreateOptions) (Info, []byte, error) {
	if err := m.checkNew(id, opts.Aliases, opts.Internal); err != nil {
		return Info{}, nil, err
	}
	switch alg {
	case tpm.RSA2048, tpm.RSA3072, tpm.P256, tpm.P384:
	default:
		return Info{}, nil, fmt.Errorf("keys: create %q: %s keys cannot be created in a TPM (want rsa2048, rsa3072, p256 or p384)", id, alg)
	}
	k, err := m.dev.CreateKey(ctx, alg)
	if err != nil {
		return Info{}, nil, fmt.Errorf("keys: create %q: %w", id, err)
	}
	csr, err := m.signCSR(k, alg, opts.CSR)
	if err != nil {
		m.forget(ctx, k)
		return Info{}, nil, fmt.Errorf("keys: create %q: %w", id, err)
	}
	blob := k.Blob()
	info, err := m.put(id, opts.Aliases, withPurpose(&record{Kind: KindTPM, Algorithm: alg, Blob: &blob}, opts.Purpose), k.Public(), nil, false)
	if err != nil {
		m.forget(ctx, k)
	}
	return info, csr, err
}

// signCSR has a new key sign the certificate request template tmpl (none:
// no CSR).
func (m *Manager) signCSR(k *tpm.Key, alg tpm.Algorithm, tmpl *x509.CertificateRequest) ([]byte, error) {
	if tmpl == nil {
		return nil, nil
	}
	signer, err := m.dev.Signer(k)
	if err != nil {
		return nil, err
	}
	t := *tmpl
	if t.SignatureAlgorithm == x509.UnknownSignatureAlgorithm && alg == tpm.P384 {
		t.SignatureAlgorithm = x509.ECDSAWithSHA384
	}
	csr, err := x509.CreateCertificateRequest(nil, &t, signer)
	if err != nil {
		return nil, fmt.Errorf("sign CSR: %w", err)
	}
	return csr, nil
}

// forget flushes a key that will not be stored (a later step failed), so
// that it does not stay loaded in the TPM.
func (m *Manager) forget(ctx context.Context, k *tpm.Key) {
	if err := m.dev.Forget(context.WithoutCancel(ctx), k); err != nil {
		m.log.Warn("keys: flush a key that was not stored", "key", k.String(), "err", err)
	}
}

// ImportOptions are the optional parts of Import and ImportWrapped.
type ImportOptions struct {
	Aliases []string
	// Internal imports one of brokerd's own keys (an id with ReservedPrefix).
	Internal bool
	// Chain is the key's certificate (leaf first, then intermediates).
	Chain []*x509.Certificate
	// Purpose, when set, fixes what the key is for; otherwise the
	// certificate says.
	Purpose Purpose
}

// Import stores an existing private key: wrapped under the TPM's storage
// root key when the TPM can hold it, sealed when the TPM says it cannot
// (never on a TPM that cannot tell now: that is an error). Either way the
// key has signed, or been unsealed, before Import reports it stored.
func (m *Manager) Import(ctx context.Context, id string, priv crypto.Signer, opts ImportOptions) (Info, error) {
	if err := m.checkNew(id, opts.Aliases, opts.Internal); err != nil {
		return Info{}, err
	}
	if err := checkChain(priv.Public(), opts.Chain); err != nil {
		return Info{}, fmt.Errorf("keys: import %q: %w", id, err)
	}
	alg, err := tpm.AlgorithmOf(priv.Public())
	if err != nil {
		return Info{}, fmt.Errorf("keys: import %q: %w", id, err)
	}
	rec := withPurpose(&record{Algorithm: alg}, opts.Purpose)
	var k *tpm.Key
	switch err := m.dev.CheckSupport(ctx, alg); {
	case err == nil:
		if k, err = m.dev.ImportKey(ctx, priv); err != nil {
			return Info{}, fmt.Errorf("keys: import %q: %w", id, err)
		}
		blob := k.Blob()
		rec.Kind, rec.Blob = KindImported, &blob
	case errors.Is(err, tpm.ErrUnsupported):
		sk, err := m.dev.SealKey(ctx, priv, m.sealPCRs)
		if err != nil {
			return Info{}, fmt.Errorf("keys: import %q: %w", id, err)
		}
		rec.Kind, rec.Sealed = KindSealed, sk
	default:
		return Info{}, fmt.Errorf("keys: import %q: %w", id, err)
	}
	info, err := m.put(id, opts.Aliases, rec, priv.Public(), opts.Chain, false)
	switch {
	case err != nil && k != nil:
		m.forget(ctx, k)
	case err == nil && rec.Kind == KindSealed:
		m.mu.Lock()
		m.entries[id].signer = priv
		m.mu.Unlock()
	}
	return info, err
}

// ImportWrapped stores a key that `brokerd key wrap` encrypted for this
// TPM's endorsement key.
func (m *Manager) ImportWrapped(ctx context.Context, id string, w *tpm.WrappedKey, opts ImportOptions) (Info, error) {
	if err := m.checkNew(id, opts.Aliases, opts.Internal); err != nil {
		return Info{}, err
	}
	pub, err := w.PublicKey()
	if err != nil {
		return Info{}, fmt.Errorf("keys: import %q: %w", id, err)
	}
	if err := checkChain(pub, opts.Chain); err != nil {
		return Info{}, fmt.Errorf("keys: import %q: %w", id, err)
	}
	k, err := m.dev.ImportWrapped(ctx, w)
	if err != nil {
		return Info{}, fmt.Errorf("keys: import %q: %w", id, err)
	}
	blob := k.Blob()
	info, err := m.put(id, opts.Aliases, withPurpose(&record{Kind: KindEKWrapped, Algorithm: k.Algorithm(), Blob: &blob}, opts.Purpose), k.Public(), opts.Chain, false)
	if err != nil {
		m.forget(ctx, k)
	}
	return info, err
}

// AttachCert sets the certificate chain of key id (leaf first) and adds
// aliases. The leaf's public key must be the key's.
func (m *Manager) AttachCert(id string, chain []*x509.Certificate, aliases []string) (Info, error) {
	e, err := m.get(id)
	if err != nil {
		return Info{}, err
	}
	if e.info.ID != id {
		return Info{}, fmt.Errorf("keys: attach certificate: %q is an alias of %q; give the key id", id, e.info.ID)
	}
	stored := *e.rec
	pub, err := x509.ParsePKIXPublicKey(stored.Public)
	if err != nil {
		return Info{}, fmt.Errorf("keys: attach certificate to %q: %w", id, err)
	}
	if len(chain) == 0 {
		return Info{}, fmt.Errorf("keys: attach certificate to %q: no certificate given", id)
	}
	if err := checkChain(pub, chain); err != nil {
		return Info{}, fmt.Errorf("keys: attach certificate to %q: %w", id, err)
	}
	for _, a := range aliases {
		if err := ValidateName(a); err != nil {
			return Info{}, fmt.Errorf("keys: attach certificate to %q: %w", id, err)
		}
	}
	all := slices.Compact(slices.Sorted(slices.Values(append(slices.Clone(e.info.Aliases), aliases...))))
	return m.put(id, all, &stored, pub, chain, true)
}

// SetOrigins binds key id (not an alias) to bank origins: used as a QWAC,
// it may then reach only those (scheme://host[:port], host may start with
// "*."), redirects included. No origins removes the binding.
func (m *Manager) SetOrigins(id string, origins []string) (Info, error) {
	e, err := m.get(id)
	if err != nil {
		return Info{}, err
	}
	if e.info.ID != id {
		return Info{}, fmt.Errorf("keys: bind origins: %q is an alias of %q; give the key id", id, e.info.ID)
	}
	norm, err := origin.Normalize(origins)
	if err != nil {
		return Info{}, fmt.Errorf("keys: bind origins of %q: %w", id, err)
	}
	if slices.Contains(norm, "*") {
		return Info{}, fmt.Errorf("keys: bind origins of %q: \"*\" binds nothing; give no origin to remove the binding", id)
	}
	rec := *e.rec
	rec.Origins = norm
	pub, err := x509.ParsePKIXPublicKey(rec.Public)
	if err != nil {
		return Info{}, fmt.Errorf("keys: bind origins of %q: %w", id, err)
	}
	return m.put(id, e.info.Aliases, &rec, pub, nil, true)
}

// checkChain checks that chain's leaf certifies pub and that each
// certificate is signed by the next.
func checkChain(pub crypto.PublicKey, chain []*x509.Certificate) error {
	if len(chain) == 0 {
		return nil
	}
	if !publicEqual(pub, chain[0].PublicKey) {
		return fmt.Errorf("%w (subject %q)", ErrCertMismatch, chain[0].Subject)
	}
	for i := 0; i+1 < len(chain); i++ {
		if err := chain[i].CheckSignatureFrom(chain[i+1]); err != nil {
			return fmt.Errorf("certificate %d (%q) is not issued by the next one (%q): %w", i+1, chain[i].Subject, chain[i+1].Subject, err)
		}
	}
	return nil
}

func publicEqual(a, b crypto.PublicKey) bool {
	ae, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ae.Equal(b)
}

// checkNew validates a new key's names and refuses taken ones before any
// TPM work is done.
func (m *Manager) checkNew(id string, aliases []string, internal bool) error {
	if internal != Reserved(id) {
		return fmt.Errorf("keys: %w: %q: names starting with %q are brokerd's own keys", ErrInvalidName, id, ReservedPrefix)
	}
	for _, n := range append([]string{id}, aliases...) {
		if err := ValidateName(n); err != nil {
			return fmt.Errorf("keys: %w", err)
		}
		if n != id && Reserved(n) {
			return fmt.Errorf("keys: %w: alias %q: names starting with %q are brokerd's own", ErrInvalidName, n, ReservedPrefix)
		}
		m.mu.RLock()
		_, taken := m.names[n]
		m.mu.RUnlock()
		if taken {
			return fmt.Errorf("keys: %q: %w", n, ErrExists)
		}
	}
	return nil
}

func (m *Manager) put(id string, aliases []string, rec *record, pub crypto.PublicKey, chain []*x509.Certificate, replace bool) (Info, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return Info{}, fmt.Errorf("keys: store %q: %w", id, err)
	}
	rec.Public = der
	if chain != nil {
		rec.Chain = nil
		for _, c := range chain {
			rec.Chain = append(rec.Chain, c.Raw)
		}
	}
	if err := rec.inferPurpose(); err != nil {
		return Info{}, fmt.Errorf("keys: store %q: %w", id, err)
	}
	if rec.Created.IsZero() {
		rec.Created = time.Now().UTC().Truncate(time.Second)
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return Info{}, fmt.Errorf("keys: store %q: %w", id, err)
	}
	e, err := newEntry(id, aliases, rec)
	if err != nil {
		return Info{}, err
	}
	err = m.st.PutKey(store.KeyRecord{ID: id, Aliases: aliases, Data: data}, replace)
	if errors.Is(err, store.ErrExists) {
		return Info{}, fmt.Errorf("keys: %w: %w", ErrExists, err)
	}
	if err != nil {
		return Info{}, fmt.Errorf("keys: %w", err)
	}
	m.mu.Lock()
	if old := m.entries[id]; old != nil {
		e.signer = old.signer // a new certificate, the same key
	}
	m.index(e)
	m.mu.Unlock()
	return e.info, nil
}

// get resolves a key id or alias.
func (m *Manager) get(name string) (*entry, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	id, ok := m.names[name]
	if !ok {
		// Clients of the reference broker name keys as paths relative to
		// its certificate directory; "./qseal.key" means "qseal.key".
		if clean := path.Clean(name); clean != name && !strings.HasPrefix(clean, "../") && !path.IsAbs(clean) {
			id, ok = m.names[clean]
		}
	}
	if !ok {
		if len(name) > 256 { // a client's name, quoted in full, could be a megabyte
			return nil, fmt.Errorf("keys: %w: %q… (%d bytes)", ErrUnknownKey, name[:64], len(name))
		}
		return nil, fmt.Errorf("keys: %w: %q", ErrUnknownKey, name)
	}
	return m.entries[id], nil
}

// Info describes the key named name (id or alias).
func (m *Manager) Info(name string) (Info, error) {
	e, err := m.get(name)
	if err != nil {
		return Info{}, err
	}
	return e.info, nil
}

// Chain returns the certificate chain of the key named name (leaf first;
// empty when none is attached).
func (m *Manager) Chain(name string) ([]*x509.Certificate, error) {
	e, err := m.get(name)
	if err != nil {
		return nil, err
	}
	return e.chain, nil
}

// List describes every key, ordered by id.
func (m *Manager) List() ([]Info, error) {
	m.mu.RLock()
	out := make([]Info, 0, len(m.entries))
	for _, e := range m.entries {
		out = append(out, e.info)
	}
	m.mu.RUnlock()
	slices.SortFunc(out, func(a, b Info) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

func info(id string, aliases []string, rec *record) (Info, error) {
	i := Info{ID: id, Aliases: slices.Clone(aliases), Kind: rec.Kind, Algorithm: rec.Algorithm, Created: rec.Created,
		ChainLen: len(rec.Chain), Origins: slices.Clone(rec.Origins), Purpose: rec.Purpose, PurposeSet: rec.PurposeSet, JOSE: rec.JOSE}
	if i.Aliases == nil {
		i.Aliases = []string{}
	}
	slices.Sort(i.Aliases)
	if rec.Sealed != nil && len(rec.Sealed.Seal.PCRs) > 0 {
		i.Warnings = append([]string{fmt.Sprintf("the key is sealed to PCRs %v: it becomes unusable when one of them changes, "+
			"and must then be imported again from its source (keep it, or a copy, off the appliance)", rec.Sealed.Seal.PCRs)},
			tpm.PCRWarnings(rec.Sealed.Seal.PCRs)...)
	}
	if len(rec.Chain) > 0 {
		leaf, err := x509.ParseCertificate(rec.Chain[0])
		if err != nil {
			return Info{}, fmt.Errorf("keys: key %q: certificate: %w", id, err)
		}
		nb, na := leaf.NotBefore.UTC(), leaf.NotAfter.UTC()
		i.Subject, i.Issuer, i.NotBefore, i.NotAfter = dn.Format(leaf.RawSubject), dn.Format(leaf.RawIssuer), &nb, &na
		i.X5tS256, i.SHA1 = X5tS256(leaf), certs.SHA1Fingerprint(leaf)
		i.OrganizationID, i.QcTypes = certs.OrganizationID(leaf), certs.QcTypes(leaf)
		if p, ok := certs.PSD2Of(leaf); ok {
			i.PSD2 = &p
		}
	}
	return i, nil
}

// X5tS256 is a certificate's SHA-256 thumbprint as JOSE and RFC 8705 write
// it: base64url without padding.
func X5tS256(c *x509.Certificate) string { return certs.X5tS256(c) }

func parseChain(ders [][]byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for _, der := range ders {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("keys: stored certificate: %w", err)
		}
		out = append(out, c)
	}
	return out, nil
}

// Delete removes key id (not an alias) and flushes it from the TPM. Its
// blobs are gone; a TPM-generated key cannot be recovered.
func (m *Manager) Delete(ctx context.Context, id string) error {
	e, err := m.get(id)
	if err != nil {
		return err
	}
	if e.info.ID != id {
		return fmt.Errorf("keys: delete: %q is an alias of %q; give the key id", id, e.info.ID)
	}
	if err := m.st.DeleteKey(id); err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	m.mu.Lock()
	delete(m.entries, id)
	delete(m.names, id)
	for _, a := range e.info.Aliases {
		delete(m.names, a)
	}
	m.mu.Unlock()
	if e.rec.Blob != nil {
		if k, err := tpm.ParseKeyBlob(*e.rec.Blob); err == nil {
			if err := m.dev.Forget(ctx, k); err != nil {
				m.log.Warn("keys: flush deleted key", "id", id, "err", err)
			}
		}
	}
	return nil
}

// Signer returns the crypto.Signer of the key named name: a TPM signer, or
// for sealed keys the private key unsealed into memory (once).
func (m *Manager) Signer(ctx context.Context, name string) (crypto.Signer, error) {
	e, err := m.get(name)
	if err != nil {
		return nil, err
	}
	m.mu.RLock()
	s := e.signer
	m.mu.RUnlock()
	if s != nil {
		return s, nil
	}
	switch {
	case e.rec.Sealed != nil:
		s, err = m.dev.UnsealKey(ctx, e.rec.Sealed)
	case e.rec.Blob != nil:
		var k *tpm.Key
		if k, err = tpm.ParseKeyBlob(*e.rec.Blob); err == nil {
			s, err = m.dev.Signer(k)
		}
	default:
		err = errors.New("record holds no key")
	}
	if err != nil {
		return nil, fmt.Errorf("keys: key %q: %w", e.info.ID, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if e.signer == nil {
		e.signer = s
	}
	return e.signer, nil
}

// LoadAll prepares every key's signer (unsealing sealed keys), so that a
// daemon fails at start, not at the first request, when a key is unusable.
func (m *Manager) LoadAll(ctx context.Context) error {
	infos, err := m.List()
	if err != nil {
		return err
	}
	var failed []string
	for _, i := range infos {
		if _, err := m.Signer(ctx, i.ID); err != nil {
			failed = append(failed, err.Error())
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("keys: %d of %d keys cannot be loaded: %s", len(failed), len(infos), strings.Join(failed, "; "))
	}
	return nil
}

// ReadPublic reads the public key of key id from a state file, without a
// TPM (for verifying the audit log offline, say).
func ReadPublic(st *store.Store, id string) (crypto.PublicKey, error) {
	rec, err := readRecord(st, id)
	if err != nil {
		return nil, err
	}
	return x509.ParsePKIXPublicKey(rec.Public)
}

// ReadChain reads the certificate chain of key id (leaf first; none
// attached: empty) from a state file, without a TPM; ErrUnknownKey when
// there is no such key.
func ReadChain(st *store.Store, id string) ([]*x509.Certificate, error) {
	rec, err := readRecord(st, id)
	if err != nil {
		return nil, err
	}
	return parseChain(rec.Chain)
}

func readRecord(st *store.Store, id string) (*record, error) {
	sr, err := st.Key(id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("keys: %w: %q", ErrUnknownKey, id)
	}
	if err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	var rec record
	if err := json.Unmarshal(sr.Data, &rec); err != nil {
		return nil, fmt.Errorf("keys: key %q: corrupt record: %w", id, err)
	}
	return &rec, nil
}

// Names returns the id and aliases of the key called name (an id or an
// alias) from a state file, without a TPM; ErrUnknownKey when there is
// none, or when name is one of brokerd's own keys.
func Names(st *store.Store, name string) ([]string, error) {
	rec, err := st.Key(name)
	if errors.Is(err, store.ErrNotFound) || err == nil && Reserved(rec.ID) {
		return nil, fmt.Errorf("keys: %w: %q", ErrUnknownKey, name)
	}
	if err != nil {
		return nil, fmt.Errorf("keys: names of %q: %w", name, err)
	}
	return append([]string{rec.ID}, rec.Aliases...), nil
}
