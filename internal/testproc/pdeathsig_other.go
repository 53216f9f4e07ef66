//go:build !linux

package testproc

import "os/exec"

// setPdeathsig does nothing: only Linux has a parent-death signal.
func setPdeathsig(*exec.Cmd) {}
