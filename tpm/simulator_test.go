//go:build simulator

package tpm_test

import (
	"context"
	"testing"

	"github.com/brokerd/brokerd/tpm"
)

// TestSimulatorKeepsKeysAcrossRuns: with a fixed seed, a key made in one
// simulator run loads and signs in the next (what the demo relies on).
func TestSimulatorKeepsKeysAcrossRuns(t *testing.T) {
	ctx := context.Background()
	cfg := tpm.Config{Address: "simulator", SimulatorSeed: 42}
	d, err := tpm.Open(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	k, err := d.CreateKey(ctx, tpm.RSA2048)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()

	d, err = tpm.Open(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	s, _ := d.Signer(k)
	mustSign(t, s)
}
