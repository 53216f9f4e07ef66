//go:build !simulator

package main

// demoCommands is empty in shipped builds: the demo runs on the in-process
// TPM simulator, which they do not contain.
func demoCommands() map[string]command { return nil }
