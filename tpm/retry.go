package tpm

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// Backoff between the attempts of a command the TPM asked to send again:
// it doubles from retryFirst up to retryMax. Attempts stop after
// retryAttempts (about 0.5 s of backoff in all), or earlier when the next
// one would not fit in the command's deadline.
const (
	retryFirst    = 5 * time.Millisecond
	retryMax      = 200 * time.Millisecond
	retryAttempts = 8
)

// retryTransport sends every command of the device. A TPM may answer
// TPM_RC_RETRY (busy with something else), TPM_RC_YIELDED (it stopped a
// long command to let others run) or TPM_RC_TESTING (a self-test is
// running): the command did nothing and must be sent again, so it is, after
// a short backoff, as long as the command's deadline allows; a command in
// an HMAC session may be sent again as it is, since the TPM did not
// advance the session's nonce. Every other code that is not a success is
// logged with its name (and returned). It counts the commands it sends,
// by command code.
//
// It sends for the token holder only; its counts may be read by anyone.
type retryTransport struct {
	tr  transport.TPMCloser
	to  timeouts
	log *slog.Logger
	obs Observer // nil: none

	mu   sync.Mutex
	sent map[tpm2.TPMCC]uint64
}

// count counts one command sent.
func (r *retryTransport) count(cc tpm2.TPMCC) {
	r.mu.Lock()
	if r.sent == nil {
		r.sent = map[tpm2.TPMCC]uint64{}
	}
	r.sent[cc]++
	r.mu.Unlock()
}

// counts returns how many commands were sent, by Part 3 name.
func (r *retryTransport) counts() map[string]uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]uint64, len(r.sent))
	for cc, n := range r.sent {
		out[ccName(cc)] += n
	}
	return out
}

// Send sends cmd, again while the TPM answers a retry warning and the
// command's deadline allows.
func (r *retryTransport) Send(cmd []byte) ([]byte, error) {
	deadline := time.Now().Add(r.to.forCommand(cmd))
	backoff := retryFirst
	cc := commandCode(cmd)
	for attempt := 1; ; attempt++ {
		r.count(cc)
		start := time.Now()
		rsp, err := r.send(cmd, deadline)
		if r.obs != nil {
			r.obs.CommandDone(ccName(cc), time.Since(start))
		}
		if err != nil {
			return nil, err
		}
		rc := responseCode(rsp)
		if rc == tpm2.TPMRCSuccess {
			return rsp, nil
		}
		if !retryable(rc) {
			r.log.Debug("tpm: command failed", "command", ccName(cc), "rc", rcName(rc))
			return rsp, nil
		}
		// The next attempt must fit: the backoff, then as long as this
		// one took, twice.
		if attempt == retryAttempts || time.Now().Add(backoff+2*time.Since(start)).After(deadline) {
			r.log.Warn("tpm: the TPM still asks to retry; giving up", "command", ccName(cc), "rc", rcName(rc), "attempts", attempt)
			return rsp, nil
		}
		r.log.Info("tpm: the TPM asks to retry", "command", ccName(cc), "rc", rcName(rc), "attempt", attempt, "backoff", backoff)
		time.Sleep(backoff) // the TPM asked for a pause; the caller holds the token meanwhile, as it would for a slow answer
		backoff = min(2*backoff, retryMax)
	}
}

// send sends one attempt, by the command's deadline where the transport
// takes one.
func (r *retryTransport) send(cmd []byte, deadline time.Time) ([]byte, error) {
	if s, ok := r.tr.(sender); ok {
		return s.sendBy(cmd, deadline)
	}
	return r.tr.Send(cmd)
}

// Idle passes the device's pause on to the transport.
func (r *retryTransport) Idle() {
	if i, ok := r.tr.(idler); ok {
		i.Idle()
	}
}

// Close closes the transport.
func (r *retryTransport) Close() error { return r.tr.Close() }

// retryable reports whether rc asks for the same command again.
func retryable(rc tpm2.TPMRC) bool {
	return rc == tpm2.TPMRCRetry || rc == tpm2.TPMRCYielded || rc == tpm2.TPMRCTesting
}

// responseCode returns a response's return code (TPM_RC_SUCCESS for one
// too short to carry any: the caller's parser reports it).
func responseCode(rsp []byte) tpm2.TPMRC {
	if len(rsp) < 10 {
		return tpm2.TPMRCSuccess
	}
	return tpm2.TPMRC(binary.BigEndian.Uint32(rsp[6:10]))
}

// commandCode returns a command's code.
func commandCode(cmd []byte) tpm2.TPMCC {
	if len(cmd) < 10 {
		return 0
	}
	return tpm2.TPMCC(binary.BigEndian.Uint32(cmd[6:10]))
}

// rcName names a return code as the TPM specification does, with the
// handle, session or parameter a format-1 code points at.
func rcName(rc tpm2.TPMRC) string {
	return fmt.Sprintf("%s (0x%03x)", rc.Error(), uint32(rc))
}
