//go:build !simulator

package tpm

import (
	"errors"

	"github.com/google/go-tpm/tpm2/transport"
)

// SimulatorAvailable reports whether this build contains the in-process TPM
// simulator. Shipped builds do not.
const SimulatorAvailable = false

func openSimulator(int64) (transport.TPMCloser, error) {
	return nil, errors.New("tpm: the simulator is not part of this build (it exists only in test and demo builds made with -tags simulator)")
}
