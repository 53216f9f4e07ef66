package keys

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

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

// String is the purpose's name (flag.Value).
func (p *Purpose) String() string { return string(*p) }

// Set reads a purpose (flag.Value: --purpose).
func (p *Purpose) Set(s string) (err error) {
	*p, err = ParsePurpose(s)
	return err
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

var (
	// ErrNotForSigning is returned for data signing with a QWAC.
	ErrNotForSigning = errors.New("a QWAC signs no data")
	// ErrHandshakeData is returned for data that is a TLS 1.3
	// CertificateVerify content.
	ErrHandshakeData = errors.New("the data is a TLS 1.3 CertificateVerify content")
	// ErrReserved is returned when an operator names one of brokerd's own
	// keys for a use that is brokerd's alone.
	ErrReserved = errors.New("brokerd's own key")
)

// tls13Context starts the content a TLS 1.3 CertificateVerify signs (RFC
// 8446 4.4.3): 64 spaces, then "TLS 1.3, client CertificateVerify" or
// "TLS 1.3, server CertificateVerify".
var tls13Context = []byte(strings.Repeat(" ", 64) + "TLS 1.3, ")

// Signable refuses what signing data (/sign, brokerd key sign) must never
// do with a key: anything with a QWAC, and a TLS 1.3 CertificateVerify
// content with any key — with such a signature one could authenticate as
// the fintech to a bank, outside makeRequest's policy and audit.
func Signable(info Info, data []byte) error {
	if !info.Purpose.AllowsSign() {
		return fmt.Errorf("key %q is a QWAC (purpose qwac): %w", info.ID, ErrNotForSigning)
	}
	if bytes.HasPrefix(data, tls13Context) {
		return ErrHandshakeData
	}
	return nil
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
