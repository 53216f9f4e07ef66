package tpm

import (
	"errors"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// fakeDevice plays a kernel TPM device on socket pairs (one message per
// read, as the kernel answers): every file it opens answers each command
// with success, except while the TPM is stopped, when every command waits
// for its return, whatever file it came on, as commands wait for the
// kernel's lock on the one TPM.
type fakeDevice struct {
	t        *testing.T
	stopped  atomic.Bool
	hangUp   atomic.Bool // the next command's file is closed instead of answered
	resume   chan struct{}
	opens    atomic.Int32
	commands atomic.Int32
	closed   chan struct{} // one value per file brokerd closed
}

func newFakeDevice(t *testing.T) *fakeDevice {
	return &fakeDevice{t: t, resume: make(chan struct{}), closed: make(chan struct{}, 16)}
}

// open is the device transport's open: brokerd's end of a new socket pair.
func (fd *fakeDevice) open() (*os.File, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	fd.opens.Add(1)
	kernel := os.NewFile(uintptr(fds[1]), "kernel")
	fd.t.Cleanup(func() { kernel.Close() })
	go fd.serve(kernel)
	return os.NewFile(uintptr(fds[0]), "tpm"), nil
}

// serve answers the commands of one file until brokerd closes it.
func (fd *fakeDevice) serve(kernel *os.File) {
	buf := make([]byte, 4096)
	for {
		if _, err := kernel.Read(buf); err != nil { // EOF: brokerd closed its end
			fd.closed <- struct{}{}
			return
		}
		fd.commands.Add(1)
		if fd.hangUp.CompareAndSwap(true, false) {
			kernel.Close()
			return
		}
		if fd.stopped.Load() {
			<-fd.resume
		}
		kernel.Write(ping) // TPM_RC_SUCCESS, no parameters
	}
}

// ping stands for any command, and for its answer.
var ping = []byte{0x80, 0x01, 0, 0, 0, 10, 0, 0, 0, 0}

// TestDeviceStopped: a device that stops answering fails a command at its
// deadline, and every later command at once while the abandoned command is
// still in the TPM. After the TPM's return, brokerd signs again: on a
// resource manager on a newly opened file, once the abandoned file is
// closed; on a raw device on the same file.
func TestDeviceStopped(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name                    string
		rm                      bool
		wantOpens, wantCommands int32
		wantClosed              int
	}{
		{"resource manager", true, 2, 3, 1},
		{"raw device", false, 1, 3, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			const deadline = 200 * time.Millisecond
			fd := newFakeDevice(t)
			f, _ := fd.open()
			d := &deviceTransport{open: fd.open, f: f, rm: c.rm, to: timeouts{command: deadline}}
			t.Cleanup(func() { d.Close() })
			if _, err := d.Send(ping); err != nil {
				t.Fatal(err)
			}
			fd.stopped.Store(true)
			for i, want := range []struct{ min, max time.Duration }{
				{deadline, 5 * deadline}, // meets the stopped TPM
				{0, deadline / 2},        // finds the first still in it
			} {
				start := time.Now()
				_, err := d.Send(ping)
				took := time.Since(start)
				if !errors.Is(err, ErrUnavailable) {
					t.Fatalf("command %d on a stopped TPM: %v", i, err)
				}
				if took < want.min || took > want.max {
					t.Fatalf("command %d failed after %v; want %v to %v", i, took, want.min, want.max)
				}
			}
			fd.stopped.Store(false)
			close(fd.resume)
			// The abandoned command returns on its own goroutine: commands
			// fail at once until it has.
			var err error
			for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(time.Millisecond) { // polling, not ordering
				if _, err = d.Send(ping); !errors.Is(err, ErrUnavailable) {
					break
				}
			}
			if err != nil {
				t.Fatalf("first command after the TPM's return: %v", err)
			}
			if o, n := fd.opens.Load(), fd.commands.Load(); o != c.wantOpens || n != c.wantCommands {
				t.Fatalf("files opened %d, commands %d; want %d, %d", o, n, c.wantOpens, c.wantCommands)
			}
			for range c.wantClosed {
				select {
				case <-fd.closed:
				case <-time.After(10 * time.Second):
					t.Fatal("an abandoned file was not closed after its command returned")
				}
			}
			select {
			case <-fd.closed:
				t.Fatal("a file in use was closed")
			default:
			}
		})
	}
}

// TestDeviceFailedCommand: a command that fails (its file hung up) is
// not left in the TPM: the next command goes to a newly opened file at
// once, never "an earlier command has not returned".
func TestDeviceFailedCommand(t *testing.T) {
	t.Parallel()
	fd := newFakeDevice(t)
	f, _ := fd.open()
	d := &deviceTransport{open: fd.open, f: f, rm: true, to: timeouts{command: 10 * time.Second}}
	t.Cleanup(func() { d.Close() })
	for i := range 200 {
		fd.hangUp.Store(true)
		if _, err := d.Send(ping); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("round %d: a command whose file hung up: %v", i, err)
		}
		if _, err := d.Send(ping); err != nil {
			t.Fatalf("round %d: the command after a failed one: %v", i, err)
		}
	}
}
