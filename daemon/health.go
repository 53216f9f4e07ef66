package daemon

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/brokerd/brokerd/broker"
	"github.com/brokerd/brokerd/tpm"
)

// The self-check keeps the TPM's health known without a TPM command per
// /health call: a ping every pingEvery, and the TPM counts as answering
// while some command (a ping or a client's) completed within staleAfter.
const (
	pingEvery  = 250 * time.Millisecond
	staleAfter = time.Second
)

// selfCheck pings the TPM every pingEvery until ctx ends, one ping at a
// time: a ping stuck in a stopped TPM does not pile up others behind it.
func (d *Daemon) selfCheck(ctx context.Context) {
	t := time.NewTicker(pingEvery)
	defer t.Stop()
	var inFlight atomic.Bool
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !inFlight.CompareAndSwap(false, true) {
			continue
		}
		go func() {
			defer inFlight.Store(false)
			pctx, cancel := context.WithTimeout(tpm.WithClass(ctx, tpm.ClassHousekeeping), d.cfg.TPM.CommandTimeout.Duration)
			defer cancel()
			d.state.TPM.Ping(pctx) // its success shows in LastSuccess
		}()
	}
}

// tpmAnswers reports whether a TPM command completed within staleAfter,
// or a key generation is under way within its own deadline.
func (d *Daemon) tpmAnswers() error {
	last := d.state.TPM.LastSuccess()
	if d.keygens.Load() > 0 && time.Since(last) < d.cfg.TPM.KeygenTimeout.Duration {
		return nil // a key generation holds the TPM, within its deadline
	}
	if since := time.Since(last); last.IsZero() || since > staleAfter {
		return fmt.Errorf("no TPM command has completed for %v", since.Round(time.Millisecond))
	}
	return nil
}

// health is GET /health, from what the self-check and the audit log know:
// no TPM command, no write per call, an answer at once. The TPM answers
// and the audit log takes records (its last commit succeeded, the disk has
// room).
func (d *Daemon) health(context.Context) error {
	if err := d.tpmAnswers(); err != nil {
		return &broker.HealthError{Reason: "the TPM does not answer", Err: err}
	}
	if err := d.state.Audit.Healthy(); err != nil {
		return &broker.HealthError{Reason: "the audit log cannot take records", Err: err}
	}
	return nil
}

// watchdog pings systemd's watchdog at half its interval, and only while
// the TPM answers: a wedged TPM gets brokerd restarted (a full disk does
// not: a restart would not free it).
func (d *Daemon) watchdog(ctx context.Context) {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil || interval == 0 {
		return
	}
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := d.tpmAnswers(); err != nil {
				d.log.Error("watchdog: the TPM does not answer; not pinging systemd", "err", err)
				continue
			}
			d.notify(daemon.SdNotifyWatchdog)
		}
	}
}
