//go:build simulator

package tpm

import (
	"fmt"

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
	return transport.FromReadWriteCloser(sim), nil
}
