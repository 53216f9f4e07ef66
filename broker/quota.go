package broker

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/brokerd/brokerd/audit"
)

// DefaultDenialQuota is how many refusals of one client a minute the
// audit log keeps one by one unless configured otherwise.
const DefaultDenialQuota = 600

// denialQuota bounds the records a client's refusals make: beyond quota
// a minute, refusals are counted, and one record per client and minute
// says how many went unrecorded. Operations that ran (a signature, a bank
// call) are always recorded: only refusals are counted.
type denialQuota struct {
	quota int
	now   func() time.Time

	mu      sync.Mutex
	minute  int64
	counts  map[string]int // client fingerprint → refusals this minute
	dropped map[string]dropped
}

// dropped is what a summary record says of one client's minute.
type dropped struct {
	subject string
	n       int
}

func newDenialQuota(quota int) *denialQuota {
	return &denialQuota{quota: quota, now: time.Now, counts: map[string]int{}, dropped: map[string]dropped{}}
}

// admit reports whether a refusal of client fp is recorded one by one.
// Summaries of the minute that just ended come back for the caller to
// record.
func (q *denialQuota) admit(fp, subject string) (bool, []audit.Record) {
	q.mu.Lock()
	defer q.mu.Unlock()
	summaries := q.rollLocked()
	q.counts[fp]++
	if q.counts[fp] <= q.quota {
		return true, summaries
	}
	d := q.dropped[fp]
	d.subject, d.n = subject, d.n+1
	q.dropped[fp] = d
	return false, summaries
}

// roll returns the summaries of a minute that ended.
func (q *denialQuota) roll() []audit.Record {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.rollLocked()
}

func (q *denialQuota) rollLocked() []audit.Record {
	m := q.now().Unix() / 60
	if m == q.minute {
		return nil
	}
	var out []audit.Record
	for fp, d := range q.dropped {
		out = append(out, audit.Record{Op: "audit.quota", Client: d.subject, ClientSHA256: fp, Status: 429,
			Detail: fmt.Sprintf("%d refusals of this client in the minute from %s were counted, not recorded one by one (quota %d a minute)",
				d.n, time.Unix(q.minute*60, 0).UTC().Format(time.RFC3339), q.quota)})
	}
	q.minute, q.counts, q.dropped = m, map[string]int{}, map[string]dropped{}
	return out
}

// FlushQuota records the summaries of refusals counted in a minute that
// ended; the daemon calls it every minute so that a client that went quiet
// is summed up too.
func (a *API) FlushQuota(ctx context.Context) {
	for _, rec := range a.quota.roll() {
		if _, err := a.cfg.Audit.Append(ctx, rec); err != nil {
			a.log.Error("audit", "op", rec.Op, "err", err)
		}
	}
}
