package daemon

import (
	"context"
	"fmt"
	"time"

	"github.com/brokerd/brokerd/keys"
)

// expiringKey is a key whose certificate expires within the warning
// window (or has expired).
type expiringKey struct {
	id       string
	notAfter time.Time
}

// warning says what an operator reads of it.
func (k expiringKey) warning(now time.Time) string {
	at := k.notAfter.UTC().Format(time.RFC3339)
	if now.After(k.notAfter) {
		return fmt.Sprintf("key %s: its certificate expired on %s; the signing helpers refuse it: attach a renewed one (brokerd key cert)", k.id, at)
	}
	return fmt.Sprintf("key %s: its certificate expires on %s, in %d days: attach a renewed one (brokerd key cert)",
		k.id, at, int(k.notAfter.Sub(now).Hours()/24))
}

// expiring lists the clients' keys whose certificate ends within days of
// now (none when days is 0), in the registry's order.
func expiring(infos []keys.Info, days int, now time.Time) []expiringKey {
	if days <= 0 {
		return nil
	}
	var out []expiringKey
	for _, i := range infos {
		if i.NotAfter != nil && !keys.Reserved(i.ID) && i.NotAfter.Before(now.AddDate(0, 0, days)) {
			out = append(out, expiringKey{id: i.ID, notAfter: *i.NotAfter})
		}
	}
	return out
}

// keyWarnings are the expiry warnings of now, for /health?details.
func (d *Daemon) keyWarnings() []string {
	infos, err := d.state.Keys.List()
	if err != nil {
		return []string{"the key registry cannot be listed: " + err.Error()}
	}
	now := time.Now()
	var out []string
	for _, k := range expiring(infos, d.cfg.Keys.ExpiryWarningDays, now) {
		out = append(out, k.warning(now))
	}
	return out
}

// logExpiry logs the expiry warnings at start and then every interval
// until ctx ends.
func (d *Daemon) logExpiry(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		for _, w := range d.keyWarnings() {
			d.log.Warn("certificate expiry", "warning", w)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
