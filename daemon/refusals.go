package daemon

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"github.com/brokerd/brokerd/audit"
	"github.com/brokerd/brokerd/policy"
)

// maxRefusalKeys bounds the (address, subject) pairs counted in one minute;
// beyond it refusals are counted together.
const maxRefusalKeys = 4096

// refusalKey is what refused handshakes are counted by.
type refusalKey struct {
	addr    string // the source address ("" once the table is full)
	subject string // SHA-256 of the presented subject, hex
}

type refusalCount struct {
	n       int
	subject string // as presented (bounded when recorded)
	reason  string // the first refusal's
}

// refusals counts client certificates refused at the handshake, per source
// address and presented subject: the first refusal of a pair in a minute
// is recorded at once, the others are counted into one record at the
// minute's end. A stranger who presents anything at all writes at most two
// records a minute per address and subject.
type refusals struct {
	mu     sync.Mutex
	since  time.Time
	counts map[refusalKey]*refusalCount
}

// add counts one refusal, and returns the record to write at once for the
// first refusal of its address and subject in this minute (else nil).
func (r *refusals) add(addr string, presented []*x509.Certificate, reason error) *audit.Record {
	id := policy.IdentityOf(presented)
	sum := sha256.Sum256([]byte(id.Subject))
	k := refusalKey{addr: addr, subject: hex.EncodeToString(sum[:])}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.counts == nil {
		r.counts, r.since = map[refusalKey]*refusalCount{}, time.Now()
	}
	c := r.counts[k]
	if c == nil {
		if len(r.counts) >= maxRefusalKeys {
			k = refusalKey{}
			if c = r.counts[k]; c == nil {
				c = &refusalCount{subject: "(more sources and subjects than counted one by one)", reason: reason.Error()}
				r.counts[k] = c
			}
		} else {
			c = &refusalCount{subject: id.Subject, reason: reason.Error()}
			r.counts[k] = c
			return &audit.Record{Op: "handshake", Client: id.Subject, ClientSHA256: id.Fingerprint, Error: reason.Error(),
				Detail: fmt.Sprintf("refused%s; possession not proven (the certificate is checked before the client proves it holds its key); more refusals of this subject from this address this minute are counted",
					fromAddr(addr))}
		}
	}
	c.n++
	return nil
}

func fromAddr(addr string) string {
	if addr == "" {
		return ""
	}
	return " from " + addr
}

// take returns the records of what was counted, and starts anew.
func (r *refusals) take() []audit.Record {
	r.mu.Lock()
	counts, since := r.counts, r.since
	r.counts = nil
	r.mu.Unlock()
	var out []audit.Record
	for k, c := range counts {
		if c.n == 0 {
			continue // only the first, already on record
		}
		out = append(out, audit.Record{Op: "handshake", Client: c.subject, Error: c.reason,
			Detail: fmt.Sprintf("%d more refused handshakes%s since %s, presented subject sha256 %s; possession not proven",
				c.n, fromAddr(k.addr), since.UTC().Format(time.RFC3339), k.subject)})
	}
	return out
}
