package policy

import (
	"encoding/asn1"

	"github.com/brokerd/brokerd/internal/certs"
)

// oidQCStatements is id-pe-qcStatements, the extension that carries the
// PSD2 QCStatement of ETSI TS 119 495.
func oidQCStatements() asn1.ObjectIdentifier { return asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 3} }

// parseQCStatements reads the PSD2 roles and the NCA id from a
// qcStatements extension's value (certs.ParsePSD2): nothing when it holds
// no valid PSD2 statement.
func parseQCStatements(der []byte) (roles []string, ncaID string) {
	p, ok := certs.ParsePSD2(der)
	if !ok || len(p.Roles) == 0 {
		return nil, p.NCAID
	}
	return p.Roles, p.NCAID
}

// isPSD2Role reports whether name is a PSD2 role's canonical name.
func isPSD2Role(name string) bool { return certs.IsPSD2Role(name) }
