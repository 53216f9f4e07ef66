// Package testproc starts the child processes of tests (swtpm, brokerd) so
// that they die with the test binary: a run killed by its timeout, a panic
// or Ctrl-C leaves nothing behind.
package testproc

import (
	"os/exec"
	"runtime"
)

// Start starts cmd, to be killed by the kernel if the test binary dies
// first, and returns a channel that receives cmd.Wait's result once the
// child has exited. Call no Wait of cmd's own.
//
// The kernel sends a child its parent-death signal when the thread that
// forked it exits, not the process (go.dev/issue/27505), and Go's runtime
// ends a thread when a goroutine locked to it returns. So Start forks from
// a goroutine locked to its thread and keeps that goroutine in cmd.Wait
// for the child's whole life: the thread outlives the child unless the
// whole process dies.
func Start(cmd *exec.Cmd) (<-chan error, error) {
	setPdeathsig(cmd)
	started := make(chan error, 1)
	exited := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Never unlocked: this goroutine returns after the child exited,
		// and its thread then ends with it.
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		exited <- cmd.Wait()
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return exited, nil
}

// Run starts cmd as Start does and waits for it to exit.
func Run(cmd *exec.Cmd) error {
	exited, err := Start(cmd)
	if err != nil {
		return err
	}
	return <-exited
}
