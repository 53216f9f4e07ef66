package daemon

import (
	"context"
	"errors"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/brokerd/brokerd/broker"
	"github.com/brokerd/brokerd/keys"
)

// tpmAlive reports whether the TPM answers: a ping succeeds, or the queue
// is full but an operation succeeded within a command timeout (busy, not
// stuck).
func (d *Daemon) tpmAlive(ctx context.Context) error {
	err := d.state.TPM.Ping(ctx)
	if err != nil && errors.Is(err, keys.ErrBusy) && time.Since(d.state.TPM.LastSuccess()) < d.cfg.TPM.CommandTimeout.Duration {
		return nil
	}
	return err
}

// health is GET /health: the TPM answers, the audit log commits and the
// state file takes a write.
func (d *Daemon) health(ctx context.Context) error {
	if err := d.tpmAlive(ctx); err != nil {
		return &broker.HealthError{Reason: "the TPM does not answer", Err: err}
	}
	if err := d.state.Audit.Healthy(); err != nil {
		return &broker.HealthError{Reason: "the state is not writable", Err: err}
	}
	if err := d.state.Store.Writable(); err != nil {
		return &broker.HealthError{Reason: "the state is not writable", Err: err}
	}
	return nil
}

// watchdog pings systemd's watchdog at half its interval, and only while
// the TPM answers: a wedged TPM gets brokerd restarted.
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
			pctx, cancel := context.WithTimeout(ctx, interval/2)
			err := d.tpmAlive(pctx)
			cancel()
			if err != nil {
				d.log.Error("watchdog: the TPM does not answer; not pinging systemd", "err", err)
				continue
			}
			d.notify(daemon.SdNotifyWatchdog)
		}
	}
}
