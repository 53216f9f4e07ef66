package tpm

import "time"

// Observer hears of the device's work, for metrics: each command sent to
// the TPM (each attempt of a retried one) and each operation's wait for
// its turn, refused ones included. Its methods are called on the
// device's hot path: they must be quick, and safe for concurrent use.
type Observer interface {
	// CommandDone: command (its Part 3 name, "TPM2_Sign") took took,
	// answered or not.
	CommandDone(command string, took time.Duration)
	// Waited: an operation of class c waited took for the TPM (zero when
	// the TPM was free), and then got it or gave up.
	Waited(c Class, took time.Duration)
}
