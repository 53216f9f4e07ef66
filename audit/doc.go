// Package audit keeps brokerd's tamper-evident audit log: records of every
// operation and administrative change, hash-chained, written with group
// commit into the state file's own buckets ("audit", "audit_checkpoints",
// "audit_meta"; package store owns the file and its other buckets),
// checkpoints signed by a TPM key, offline verification, export and
// retention.
//
// # Durability
//
// Append returns nil only once its record is on disk: written in a bbolt
// transaction that was committed and fsynced, linked to the record before
// it. Callers answer their client only after that, so a crash (power cut,
// SIGKILL, OOM) can lose only records whose Append had not returned, and
// those belong to operations that were never answered. When a record cannot
// be made durable, Append fails with ErrAudit and the operation must fail.
// Concurrent Appends share one commit (one fsync) without weakening this.
//
// A record that follows the last checkpoint is durable but not yet signed:
// someone with the file could cut such records from the end without trace.
// Checkpoints are made every few records and every few minutes, at start
// and at shutdown, so that window stays short.
//
// # Concurrency
//
// A Log is safe for concurrent use. It must be closed before its store.
package audit
