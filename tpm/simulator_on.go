//go:build simulator

package tpm

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/tpm2/transport"
)

// SimulatorAvailable reports whether this build contains the in-process TPM
// simulator. Shipped builds do not.
const SimulatorAvailable = true

// openSimulator starts the in-process reference TPM. A non-zero seed fixes
// its hierarchy seeds so that key blobs made in one run load in the next (the
// simulator keeps no state on disk); only one simulator runs per process.
func openSimulator(seed int64) (transport.TPMCloser, error) {
	var (
		sim *simulator.Simulator
		err error
	)
	if seed != 0 {
		sim, err = simulator.GetWithFixedSeedInsecure(seed)
	} else {
		sim, err = simulator.Get()
	}
	if err != nil {
		return nil, fmt.Errorf("tpm: start simulator: %w", err)
	}
	tr := transport.FromReadWriteCloser(sim)
	if err := setClock(tr, uint64(time.Now().UnixMilli())); err != nil {
		tr.Close()
		return nil, fmt.Errorf("tpm: start simulator: %w", err)
	}
	return tr, nil
}

// setClock moves the TPM's clock forward to ms (TPM2_ClockSet with the
// owner's empty password). A hardware TPM keeps its clock in NV memory, so
// it never goes back between boots; the simulator keeps nothing and would
// start each run at zero, which the audit log rightly reports as a TPM
// whose state went back. Starting it at the wall clock's milliseconds
// keeps it going forward from run to run, as hardware does. go-tpm has no
// ClockSet, so the command is encoded here.
func setClock(tr transport.TPM, ms uint64) error {
	cmd := binary.BigEndian.AppendUint16(nil, 0x8002) // TPM_ST_SESSIONS
	cmd = binary.BigEndian.AppendUint32(cmd, 35)      // command size
	cmd = binary.BigEndian.AppendUint32(cmd, 0x128)   // TPM_CC_ClockSet
	cmd = binary.BigEndian.AppendUint32(cmd, 0x40000001)
	// Authorization area: one password session with an empty password.
	cmd = binary.BigEndian.AppendUint32(cmd, 9)
	cmd = binary.BigEndian.AppendUint32(cmd, 0x40000009) // TPM_RS_PW
	cmd = append(cmd, 0, 0, 0, 0, 0)                     // nonce, attributes, hmac
	cmd = binary.BigEndian.AppendUint64(cmd, ms)
	rsp, err := tr.Send(cmd)
	if err != nil {
		return fmt.Errorf("set the clock: %w", err)
	}
	if len(rsp) < 10 {
		return fmt.Errorf("set the clock: short response")
	}
	if rc := binary.BigEndian.Uint32(rsp[6:10]); rc != 0 {
		return fmt.Errorf("set the clock: TPM response code %#x", rc)
	}
	return nil
}
