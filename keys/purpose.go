package keys

import (
	"crypto/x509"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/brokerd/brokerd/internal/certs"
	"github.com/brokerd/brokerd/store"
)

// Purpose is what a key may be used for.
type Purpose string

// Purposes.
const (
	// PurposeQWAC keys authenticate TLS connections to banks: makeRequest
	// only. /sign refuses them: a signature over chosen bytes is exactly a
	// TLS 1.3 CertificateVerify, with which a client could pose as the
	// fintech to any bank.
	PurposeQWAC Purpose = "qwac"
	// PurposeQSeal keys sign data: /sign only, never a TLS connection.
	PurposeQSeal Purpose = "qseal"
	// PurposeAny keys (no certificate says what they are) do both; /sign
	// still refuses data that is a TLS 1.3 CertificateVerify.
	PurposeAny Purpose = "any"
)

// ParsePurpose reads "qwac", "qseal" or "any".
func ParsePurpose(s string) (Purpose, error) {
	switch p := Purpose(s); p {
	case PurposeQWAC, PurposeQSeal, PurposeAny:
		return p, nil
	}
	return "", fmt.Errorf("purpose %q: want qwac, qseal or any", s)
}

// InferPurpose says what a key with this certificate (leaf; nil for none)
// is for: the QcType statement first (web: a QWAC; eseal or esign: a
// QSealC), else a clientAuth extended key usage makes a QWAC and its
// absence a QSealC; without a certificate, any.
func InferPurpose(leaf *x509.Certificate) Purpose {
	if leaf == nil {
		return PurposeAny
	}
	types := certs.QcTypes(leaf)
	switch {
	case slices.Contains(types, "web"):
		return PurposeQWAC
	case slices.Contains(types, "eseal"), slices.Contains(types, "esign"):
		return PurposeQSeal
	case slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth), slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageAny):
		return PurposeQWAC
	}
	return PurposeQSeal
}

// AllowsSign reports whether /sign may use a key of this purpose.
func (p Purpose) AllowsSign() bool { return p != PurposeQWAC }

// AllowsTLS reports whether makeRequest may use a key of this purpose.
func (p Purpose) AllowsTLS() bool { return p != PurposeQSeal }

// withPurpose fixes rec's purpose when p is set.
func withPurpose(rec *record, p Purpose) *record {
	if p != "" {
		rec.Purpose, rec.PurposeSet = p, true
	}
	return rec
}

// inferPurpose sets the purpose from the certificate, unless the operator
// set it.
func (rec *record) inferPurpose() error {
	if rec.PurposeSet {
		return nil
	}
	var leaf *x509.Certificate
	if len(rec.Chain) > 0 {
		var err error
		if leaf, err = x509.ParseCertificate(rec.Chain[0]); err != nil {
			return fmt.Errorf("certificate: %w", err)
		}
	}
	rec.Purpose = InferPurpose(leaf)
	return nil
}

// migrate gives a key stored before purposes existed the purpose its
// certificate says, and stores it so.
func (m *Manager) migrate(sr store.KeyRecord, rec *record) error {
	if rec.Purpose != "" {
		return nil
	}
	if err := rec.inferPurpose(); err != nil {
		return fmt.Errorf("keys: key %q: %w", sr.ID, err)
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("keys: key %q: %w", sr.ID, err)
	}
	if err := m.st.PutKey(store.KeyRecord{ID: sr.ID, Aliases: sr.Aliases, Data: data}, true); err != nil {
		return fmt.Errorf("keys: key %q: store its purpose: %w", sr.ID, err)
	}
	m.log.Info("key purpose inferred from its certificate", "key", sr.ID, "purpose", rec.Purpose)
	return nil
}

// SetPurpose fixes what key id (not an alias) is for; "" lets its
// certificate say again.
func (m *Manager) SetPurpose(id string, p Purpose) (Info, error) {
	e, err := m.get(id)
	if err != nil {
		return Info{}, err
	}
	if e.info.ID != id {
		return Info{}, fmt.Errorf("keys: set purpose: %q is an alias of %q; give the key id", id, e.info.ID)
	}
	rec := *e.rec
	rec.Purpose, rec.PurposeSet = p, p != ""
	pub, err := x509.ParsePKIXPublicKey(rec.Public)
	if err != nil {
		return Info{}, fmt.Errorf("keys: set purpose of %q: %w", id, err)
	}
	return m.put(id, e.info.Aliases, &rec, pub, nil, true)
}
