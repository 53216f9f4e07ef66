package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"unicode/utf8"
)

// Bounds on what one record keeps of a field: a client chooses key ids,
// subjects, paths and request ids, and must not fill the disk through the
// audit log. A longer value keeps its first bytes and its SHA-256, so it
// can still be matched.
const (
	// MaxField bounds every field but Detail.
	MaxField = 256
	// MaxDetail bounds Detail (policy rules, redirect chains).
	MaxDetail = 4096
)

// bound returns r with every field within its bound.
func (r Record) bound() Record {
	for _, f := range []*string{&r.Op, &r.RequestID, &r.Client, &r.ClientSHA256, &r.KeyID, &r.Alg, &r.DataSHA256, &r.Target, &r.Error} {
		*f = Truncate(*f, MaxField)
	}
	r.Detail = Truncate(r.Detail, MaxDetail)
	return r
}

// Truncate returns s when it has at most limit bytes; otherwise its first
// bytes (cut at a character boundary) followed by "…(N bytes, sha256 HEX)",
// the whole within limit bytes for limit ≥ 128.
func Truncate(s string, limit int) string {
	if len(s) <= limit {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	tail := "…(" + strconv.Itoa(len(s)) + " bytes, sha256 " + hex.EncodeToString(sum[:]) + ")"
	keep := max(limit-len(tail), 0)
	for keep > 0 && !utf8.RuneStart(s[keep]) {
		keep--
	}
	return s[:keep] + tail
}
