package tpm

import (
	"context"

	"github.com/google/go-tpm/tpm2"
)

// Test hooks. They exist only in this package's tests.

// UsePasswordSessions makes d's signing commands authorise keys with
// password sessions (the auth value in clear on the bus), as brokerd did
// before salted sessions, or (on == false) in the salted session again:
// the benchmark measures what the salted session costs, and a test
// reaches the RSA self-check behind it.
func UsePasswordSessions(d *Device, on bool) {
	d.do(context.Background(), func() error { d.crypto.passwordAuth = on; return nil })
}

// DropSession makes d forget (and flush) its signing session: the next
// signature starts a new one.
func DropSession(d *Device) {
	d.do(context.Background(), func() error { d.dropSession(); return nil })
}

// SessionsStarted returns how many salted sessions d has started.
func SessionsStarted(d *Device) int {
	var n int
	d.do(context.Background(), func() error { n = d.crypto.sessionsStarted; return nil })
	return n
}

// ResourceManagerRules returns c with the device told to follow the rules
// of a kernel resource manager (flush only what it tracks, keep one key
// loaded) whatever the address: swtpm plays /dev/tpmrm0.
func ResourceManagerRules(c Config) Config {
	c.resourceManager = true
	return c
}

// SessionHandles lists the session handles loaded in the TPM, brokerd's
// and other programs'.
func SessionHandles(d *Device) ([]uint32, error) {
	var out []uint32
	err := d.do(context.Background(), func() error {
		for _, ht := range []tpm2.TPMHT{tpm2.TPMHTHMACSession, tpm2.TPMHTPolicySession} {
			hs, err := d.handles(ht)
			if err != nil {
				return err
			}
			for _, h := range hs {
				out = append(out, uint32(h))
			}
		}
		return nil
	})
	return out, err
}
