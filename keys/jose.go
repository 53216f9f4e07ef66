package keys

import (
	"crypto/x509"
	"fmt"
	"strings"
	"unicode"
)

// JOSEDefaults are what the JWS helpers put in a key's headers when the
// client does not say: the kid, and UK Open Banking's iss and tan claims.
// Empty fields fall back to the certificate (kid: its x5t#S256; iss: its
// subject).
type JOSEDefaults struct {
	KID   string `json:"kid,omitempty"`
	OBISS string `json:"ob_iss,omitempty"`
	OBTAN string `json:"ob_tan,omitempty"`
}

// JOSEChange changes a key's JOSE defaults: nil fields stay as they are,
// "" clears one.
type JOSEChange struct {
	KID, OBISS, OBTAN *string
}

// maxJOSEValue bounds a default: it goes into every header.
const maxJOSEValue = 512

// SetJOSE changes the JOSE defaults of key id (not an alias).
func (m *Manager) SetJOSE(id string, c JOSEChange) (Info, error) {
	e, err := m.get(id)
	if err != nil {
		return Info{}, err
	}
	if e.info.ID != id {
		return Info{}, fmt.Errorf("keys: configure: %q is an alias of %q; give the key id", id, e.info.ID)
	}
	rec := *e.rec
	for _, f := range []struct {
		name string
		in   *string
		dst  *string
	}{{"jws-kid", c.KID, &rec.JOSE.KID}, {"ob-iss", c.OBISS, &rec.JOSE.OBISS}, {"ob-tan", c.OBTAN, &rec.JOSE.OBTAN}} {
		if f.in == nil {
			continue
		}
		if len(*f.in) > maxJOSEValue || strings.IndexFunc(*f.in, unicode.IsControl) >= 0 {
			return Info{}, fmt.Errorf("keys: configure %q: %s must be at most %d bytes without control characters", id, f.name, maxJOSEValue)
		}
		*f.dst = *f.in
	}
	pub, err := x509.ParsePKIXPublicKey(rec.Public)
	if err != nil {
		return Info{}, fmt.Errorf("keys: configure %q: %w", id, err)
	}
	return m.put(id, e.info.Aliases, &rec, pub, nil, true)
}
