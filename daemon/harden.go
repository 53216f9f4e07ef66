package daemon

import (
	"context"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/brokerd/brokerd/keys"
)

// harden keeps key material out of reach of other local users and off
// the disk: the process is not dumpable (no core file, no ptrace or
// /proc/PID/mem by users other than root), and when sealed keys are
// decrypted into memory, the process's memory is locked so that it is
// never swapped out. A process that cannot lock (RLIMIT_MEMLOCK) keeps
// working, with a warning saying how to fix it.
func (d *Daemon) harden(context.Context) error {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_DUMPABLE, 0): %w", err)
	}
	if !d.hasSealedKeys() {
		return nil
	}
	if err := unix.Mlockall(unix.MCL_CURRENT | unix.MCL_FUTURE); err != nil {
		d.log.Warn("sealed keys are in memory that may be swapped to disk: memory cannot be locked; "+
			"set LimitMEMLOCK=infinity for the service, or run the appliance without swap", "err", err)
		return nil
	}
	d.log.Info("memory locked: sealed key material is never swapped out")
	return nil
}

// hasSealedKeys reports whether a key is decrypted into memory.
func (d *Daemon) hasSealedKeys() bool {
	infos, _ := d.state.Keys.List()
	for _, i := range infos {
		if i.Kind == keys.KindSealed {
			return true
		}
	}
	return false
}
