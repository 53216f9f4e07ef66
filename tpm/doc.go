// Package tpm owns the TPM: opening it (a kernel device, a swtpm socket, or,
// in builds with the simulator tag, the in-process reference simulator), the
// storage root key, creating, importing, loading and sealing keys, the
// crypto.Signer that signs with them, and serialising all access to the one
// device.
//
// # Concurrency
//
// A [Device] is safe for concurrent use. One command sequence runs at a
// time: a caller becomes the device's owner by taking its token. An
// uncontended operation runs on the caller's goroutine, with no hand-off.
// While the TPM is busy, operations wait in one queue per priority
// [Class]: [ClassAPI] (authenticated clients; the default), then
// [ClassHandshake] (the API server's key in inbound handshakes), then
// [ClassHousekeeping] (the daemon's upkeep). Each time the TPM frees, the
// next operation is chosen by weighted round robin in that priority order
// (8, 2 and 1 turns per round by default), so API operations go first but
// no class starves. Each class has its own bound on waiting operations:
// a caller that finds its class's queue full, or that waits longer than
// the configured budget, gets [ErrBusy]; [Device.Saturated] tells a
// caller beforehand. A context carries its class ([WithClass]); a
// [Signer] fixed to a class ([Signer.WithClass]) carries it into
// crypto/tls, which signs without a context. Each command has a deadline,
// so a TPM that stops answering yields [ErrUnavailable] instead of a hang.
//
// # Slots and handles
//
// A TPM without a resource manager (swtpm, a raw /dev/tpm0) holds three
// transient objects. The device keeps a small least-recently-used cache of
// loaded objects, evicts one whenever a command needs a free slot, and
// flushes every transient object and session when it opens and after any
// transport error, so handles left behind by a crash or a timed-out command
// do not accumulate.
//
// Behind the kernel's resource manager ([Address.ResourceManager]:
// /dev/tpmrm0) object handles are the process's own, and the kernel loads
// and saves every object a process keeps around each of its commands;
// session handles are not virtualised. There the device flushes only what
// it made and tracks (never another program's session), keeps only the key
// in use loaded, and after a command that missed its deadline lets go of
// the device file (closing it flushes brokerd's objects and sessions) and
// opens it again, instead of meeting EBUSY until the kernel drops the
// abandoned command (120 s). On a raw device it reads the abandoned
// command's response before the next command. On either, every command
// fails at once while the abandoned one is still in the TPM.
//
// The storage root key is the persistent one at 0x81000001 when it is the
// key of brokerd's template ([Device.PersistSRK] makes it so), else a
// transient one. Primary keys and keys under an endorsement key load again
// from saved contexts, so no endorsement key is derived on the signing
// path. A signature with its key loaded is one TPM command: the salted
// session is kept across signatures. Warnings that ask for the command
// again (TPM_RC_RETRY, TPM_RC_YIELDED, TPM_RC_TESTING) are retried within
// the command's deadline; every other code is logged by name.
//
// # RSA padding
//
// RSA keys are sign+decrypt keys with scheme NULL. The signer builds the
// PKCS #1 v1.5 or PSS encoding in Go (PSS with salt length = hash length) and
// applies the private key with TPM2_RSA_Decrypt. Many hardware TPMs sign PSS
// with the largest salt, which TLS 1.3 and JWS verifiers reject; this path
// gives the same bytes on every TPM. Each key has its own random auth value,
// so only brokerd can use a key as a raw RSA oracle. A TPM in FIPS 140-2
// mode ([Device.FIPS]) refuses raw RSA: there RSA keys sign with TPM2_Sign,
// whose PSS salt is then the hash length. Every RSA signature is verified
// before it is returned, with the salt length asked for.
//
// # Hashes
//
// ECDSA keys sign digests of any hash, and TPM2_Sign names only hashes
// the TPM has ([Device.HasHash]): the TPM gets the leftmost curve-size
// bytes of the digest (all ECDSA uses of it) with the hash of that size.
//
// # Errors
//
// [ErrUnsupported] (an algorithm the TPM lacks), [ErrFailureMode],
// [ErrWrongTPM] (another TPM's key material) and [ErrCorruptBlob] (this
// TPM's, altered) are told apart; [Device.CheckSupport] never reports a
// TPM that cannot answer now as lacking an algorithm. Every key created
// or imported has signed, and every sealed secret has been unsealed,
// before it is returned.
//
// # Keys off the bus
//
// No auth value crosses the bus to the TPM in clear, where a probe on a
// discrete chip's bus could read it. Signatures are authorised through
// one HMAC session salted to the storage root key, kept open across
// signatures (so a signature is still one TPM command), with the first
// command parameter encrypted; auth values and secrets sent to the TPM
// (TPM2_Create, TPM2_ObjectChangeAuth) travel encrypted in salted
// sessions, and sealed secrets come back encrypted.
//
// This package knows nothing of key names, HTTP or persistence: key blobs go
// in and out as values the caller stores.
package tpm
