package audit

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"time"
)

// Buckets of the audit log in the state file.
var (
	bucketAudit       = []byte("audit")
	bucketCheckpoints = []byte("audit_checkpoints")
	bucketAuditMeta   = []byte("audit_meta")
	// keyAnchor is the signed anchor of pruned records in bucketAuditMeta
	// (state files before the audit package kept it in store's "meta").
	keyAnchor  = []byte("anchor")
	legacyMeta = []byte("meta")
	legacyKey  = []byte("audit_anchor")
)

// ErrAudit wraps failures to make an audit record durable: the operation
// it records must not complete.
var ErrAudit = errors.New("audit log cannot be written")

// Record is one entry of the audit log. It names who did what with which
// key and the SHA-256 of the data involved, never the data, a signature or
// key material. Seq and Prev are set when it is appended.
type Record struct {
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
	// Op is the operation: sign, makeRequest.start, makeRequest,
	// handshake, admin.key.create, admin.policy.reload, ...
	Op        string `json:"op"`
	RequestID string `json:"request_id,omitempty"`
	// Client is the subject of the client's certificate (or the local
	// user for admin changes); ClientSHA256 the certificate's SHA-256.
	Client       string `json:"client,omitempty"`
	ClientSHA256 string `json:"client_sha256,omitempty"`
	KeyID        string `json:"key_id,omitempty"`
	Alg          string `json:"alg,omitempty"`
	// DataSHA256 is the SHA-256 of the signed data or the request body.
	DataSHA256 string `json:"data_sha256,omitempty"`
	// Target is "METHOD scheme://host:port/path" of a bank call.
	Target     string  `json:"target,omitempty"`
	Status     int     `json:"status"`
	DurationMS float64 `json:"duration_ms"`
	Error      string  `json:"error,omitempty"`
	// Detail says more about admin changes (the rule, the key kind...).
	Detail string `json:"detail,omitempty"`
	// Prev is the SHA-256 (hex) of the previous record as stored.
	Prev string `json:"prev"`
}

// genesis is the Prev of the first record.
var genesis = hex.EncodeToString(make([]byte, 32))

func be64(n uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, n)
	return b
}
