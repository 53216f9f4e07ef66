package pki

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/brokerd/brokerd/store"
)

// ErrNameTaken is returned when a client name is in use by a valid
// certificate.
var ErrNameTaken = errors.New("client name in use")

// Record is one client certificate the CA issued.
type Record struct {
	Name        string     `json:"name"`
	Serial      string     `json:"serial"`      // lower-case hex
	Fingerprint string     `json:"fingerprint"` // SHA-256 of the certificate, hex
	Roles       []string   `json:"roles,omitempty"`
	NotBefore   time.Time  `json:"not_before"`
	NotAfter    time.Time  `json:"not_after"`
	Revoked     *time.Time `json:"revoked,omitempty"`
	// KeySHA256 is the SHA-256 of the certified public key (SPKI DER).
	KeySHA256 string `json:"key_sha256"`
	Cert      []byte `json:"cert"` // DER
}

// Status is "valid", "revoked" or "expired" at now.
func (r Record) Status(now time.Time) string {
	switch {
	case r.Revoked != nil:
		return "revoked"
	case now.After(r.NotAfter):
		return "expired"
	}
	return "valid"
}

// Listing is a record as `brokerd client list` shows it: with its status
// and its certificate in PEM.
type Listing struct {
	Record
	Status string `json:"status"`
	Cert   []byte `json:"cert,omitempty"` // the record's DER, left out: PEM has it
	PEM    string `json:"certificate"`
}

// Listing returns every record (as List orders them) with its status at
// now.
func (r *Registry) Listing(now time.Time) ([]Listing, error) {
	recs, err := r.List()
	if err != nil {
		return nil, err
	}
	out := make([]Listing, 0, len(recs))
	for _, rec := range recs {
		out = append(out, Listing{Record: rec, Status: rec.Status(now), PEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rec.Cert}))})
	}
	return out, nil
}

// Registry is the list of client certificates, kept in the state file.
type Registry struct{ st *store.Store }

// NewRegistry returns the registry kept in st.
func NewRegistry(st *store.Store) *Registry { return &Registry{st: st} }

// List returns every record, ordered by name, then by issue time.
func (r *Registry) List() ([]Record, error) {
	recs, err := r.st.Clients()
	if err != nil {
		return nil, err
	}
	out := make([]Record, 0, len(recs))
	for _, sr := range recs {
		var rec Record
		if err := json.Unmarshal(sr.Data, &rec); err != nil {
			return nil, fmt.Errorf("pki: client record %s: %w", sr.Serial, err)
		}
		out = append(out, rec)
	}
	slices.SortFunc(out, func(a, b Record) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return a.NotBefore.Compare(b.NotBefore)
	})
	return out, nil
}

// CheckNew refuses a certificate for name when a valid one has that name,
// and a key whose certificate was revoked.
func (r *Registry) CheckNew(name string, keySHA256 string, now time.Time) error {
	recs, err := r.List()
	if err != nil {
		return err
	}
	for _, rec := range recs {
		if rec.Name == name && rec.Status(now) == "valid" {
			return fmt.Errorf("pki: %w: client %q has a valid certificate (serial %s, until %s): revoke it first",
				ErrNameTaken, name, rec.Serial, rec.NotAfter.UTC().Format(time.DateOnly))
		}
		if rec.KeySHA256 == keySHA256 && rec.Revoked != nil {
			return fmt.Errorf("pki: this key's certificate for client %q (serial %s) was revoked: the client needs a new key", rec.Name, rec.Serial)
		}
	}
	return nil
}

// Add records an issued certificate.
func (r *Registry) Add(cert *x509.Certificate, c Client) (Record, error) {
	fp := sha256.Sum256(cert.Raw)
	rec := Record{Name: c.Name, Serial: SerialHex(cert), Fingerprint: hex.EncodeToString(fp[:]), Roles: c.Roles,
		NotBefore: cert.NotBefore, NotAfter: cert.NotAfter, KeySHA256: KeySHA256(cert.RawSubjectPublicKeyInfo), Cert: cert.Raw}
	data, err := json.Marshal(rec)
	if err != nil {
		return Record{}, err
	}
	if err := r.st.PutClient(store.ClientRecord{Serial: rec.Serial, Data: data}); err != nil {
		return Record{}, err
	}
	return rec, nil
}

// ErrAlreadyRevoked is returned when the certificate to revoke is revoked.
var ErrAlreadyRevoked = errors.New("already revoked")

// Revoke marks the certificate named by which revoked at now: a serial
// number (hex, any case, as `client list` shows it) or a client name,
// which must then have exactly one valid certificate. A client whose
// certificate is revoked already (or expired) is told so.
func (r *Registry) Revoke(which string, now time.Time) (Record, error) {
	recs, err := r.List()
	if err != nil {
		return Record{}, err
	}
	var hits, named []Record
	serial := normalSerial(which)
	for _, rec := range recs {
		if serial != "" && serial == rec.Serial {
			hits, named = []Record{rec}, nil
			break
		}
		if rec.Name == which {
			named = append(named, rec) // List orders them by issue time
			if rec.Status(now) == "valid" {
				hits = append(hits, rec)
			}
		}
	}
	if len(hits) == 0 && len(named) > 0 {
		hits = named[len(named)-1:] // the latest, revoked or expired
	}
	switch {
	case len(hits) == 0:
		return Record{}, fmt.Errorf("pki: no client certificate named %q, and none with that serial: %w", which, store.ErrNotFound)
	case len(hits) > 1:
		return Record{}, fmt.Errorf("pki: client %q has %d valid certificates: give the serial number", which, len(hits))
	case hits[0].Revoked != nil:
		at := hits[0].Revoked.UTC().Format(time.RFC3339)
		return Record{}, fmt.Errorf("pki: client %q (serial %s) is %w (it was revoked on %s)", hits[0].Name, hits[0].Serial, ErrAlreadyRevoked, at)
	case len(named) > 0 && hits[0].Status(now) == "expired":
		return Record{}, fmt.Errorf("pki: client %q has no valid certificate: the last one (serial %s) expired on %s", which,
			hits[0].Serial, hits[0].NotAfter.UTC().Format(time.RFC3339))
	}
	rec := hits[0]
	at := now.UTC().Truncate(time.Second)
	rec.Revoked = &at
	data, err := json.Marshal(rec)
	if err != nil {
		return Record{}, err
	}
	if err := r.st.PutClient(store.ClientRecord{Serial: rec.Serial, Data: data}); err != nil {
		return Record{}, err
	}
	return rec, nil
}

// RevokedSerials maps the serials of revoked certificates to when.
func (r *Registry) RevokedSerials() (map[string]time.Time, error) {
	recs, err := r.List()
	if err != nil {
		return nil, err
	}
	out := map[string]time.Time{}
	for _, rec := range recs {
		if rec.Revoked != nil {
			out[rec.Serial] = *rec.Revoked
		}
	}
	return out, nil
}

// normalSerial writes a serial as SerialHex does, from hex with any case,
// colons (as openssl prints them) and leading zeros; "" if it is not hex.
func normalSerial(s string) string {
	s = strings.TrimLeft(strings.ToLower(strings.ReplaceAll(s, ":", "")), "0")
	if s == "" || strings.Trim(s, "0123456789abcdef") != "" {
		return ""
	}
	return s
}

// KeySHA256 is the hex SHA-256 of a public key's SPKI DER.
func KeySHA256(spki []byte) string {
	sum := sha256.Sum256(spki)
	return hex.EncodeToString(sum[:])
}

// sameCA reports whether a and b are the same CA: the same name and key
// (a CA certificate issued again stays the same CA).
func sameCA(a, b *x509.Certificate) bool {
	return bytes.Equal(a.RawSubject, b.RawSubject) && bytes.Equal(a.RawSubjectPublicKeyInfo, b.RawSubjectPublicKeyInfo)
}
