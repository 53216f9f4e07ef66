package tpm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// Address kinds accepted by [ParseAddress].
const (
	KindDevice    = "device"
	KindSwtpm     = "swtpm"
	KindSimulator = "simulator"
)

// DefaultAddress is the TPM of a Linux machine, behind the kernel's resource
// manager.
const DefaultAddress = "device:/dev/tpmrm0"

// maxResponse bounds a TPM response; real TPMs answer at most a few KiB.
const maxResponse = 64 << 10

// Address names a TPM: "device:/dev/tpmrm0", "swtpm:/run/swtpm/server.sock"
// or "simulator".
type Address struct {
	Kind string
	Path string
}

// String returns the address in the form ParseAddress accepts.
func (a Address) String() string {
	if a.Kind == KindSimulator {
		return KindSimulator
	}
	return a.Kind + ":" + a.Path
}

// ParseAddress parses a TPM address. It checks the form only; whether the
// simulator is available depends on the build (see [SimulatorAvailable]).
func ParseAddress(s string) (Address, error) {
	if s == KindSimulator {
		return Address{Kind: KindSimulator}, nil
	}
	kind, path, ok := strings.Cut(s, ":")
	if !ok || path == "" {
		return Address{}, fmt.Errorf("tpm: address %q: want device:PATH, swtpm:SOCKET or simulator", s)
	}
	switch kind {
	case KindDevice, KindSwtpm:
		return Address{Kind: kind, Path: path}, nil
	}
	return Address{}, fmt.Errorf("tpm: address %q: unknown kind %q (want device, swtpm or simulator)", s, kind)
}

// timeouts chooses a deadline per command: key generation on a hardware TPM
// takes seconds to minutes, everything else must answer quickly.
type timeouts struct {
	command time.Duration
	keygen  time.Duration
}

func (t timeouts) forCommand(cmd []byte) time.Duration {
	if len(cmd) >= 10 {
		switch tpm2.TPMCC(binary.BigEndian.Uint32(cmd[6:10])) {
		case tpm2.TPMCCCreate, tpm2.TPMCCCreatePrimary, tpm2.TPMCCCreateLoaded:
			return t.keygen
		}
	}
	return t.command
}

// ResourceManager reports whether the address is a kernel resource
// manager (/dev/tpmrm0, or a link to one): it virtualises object handles
// per open file, flushes a file's objects and sessions when it is closed,
// and passes session handles through, so flushing a session brokerd did
// not start would end another program's. A raw device (/dev/tpm0), swtpm's
// socket and the simulator have no resource manager: whatever a client
// leaves loaded stays, and brokerd flushes it.
func (a Address) ResourceManager() bool {
	if a.Kind != KindDevice {
		return false
	}
	p := a.Path
	if r, err := filepath.EvalSymlinks(p); err == nil {
		p = r
	}
	return strings.HasPrefix(filepath.Base(p), "tpmrm")
}

// openTransport connects to the TPM at addr with per-command deadlines.
func openTransport(addr Address, to timeouts, simSeed int64) (transport.TPMCloser, error) {
	switch addr.Kind {
	case KindSwtpm:
		fi, err := os.Stat(addr.Path)
		if err != nil {
			return nil, fmt.Errorf("%w: open %s: %w", ErrUnavailable, addr, err)
		}
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("tpm: open %s: not a unix socket", addr)
		}
		return &socketTransport{path: addr.Path, to: to}, nil
	case KindDevice:
		f, err := openDevice(addr.Path)
		if err != nil {
			return nil, fmt.Errorf("tpm: open %s: %w", addr, err)
		}
		return newDeviceTransport(f, addr.Path, addr.ResourceManager(), to), nil
	case KindSimulator:
		return openSimulator(simSeed)
	}
	return nil, fmt.Errorf("tpm: open %s: unknown address kind", addr)
}

// openDevice opens a kernel TPM device, blocking: a write runs the
// command and returns when the TPM has answered, and the read that
// follows returns the answer. (Go's poller, where os.OpenFile puts the
// file, does not help: while a command is in the TPM, the kernel holds the
// file's lock in read, write and poll alike, so no deadline interrupts
// them; see deviceTransport.)
func openDevice(path string) (*os.File, error) {
	fd, err := syscall.Open(path, syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, &os.PathError{Op: "open", Path: path, Err: err})
	}
	f := os.NewFile(uintptr(fd), path)
	fi, err := f.Stat()
	if err == nil && fi.Mode()&os.ModeCharDevice == 0 {
		f.Close()
		return nil, errors.New("not a character device")
	}
	return f, nil
}

// sender is a transport that sends a command with a deadline given by
// its caller (the retries of a warning share the command's deadline).
type sender interface {
	sendBy(cmd []byte, deadline time.Time) ([]byte, error)
}

// socketTransport talks to swtpm's unix-socket server with a deadline on
// every command: go-tpm's linuxudstpm has none and hangs forever on a swtpm
// that stops answering. It keeps one connection while commands flow and
// closes it when the device goes idle, because swtpm serves one connection
// at a time and other clients (tpm2-tools, a second brokerd command) must
// get their turn. A restarted swtpm is picked up by the next command.
type socketTransport struct {
	path string
	to   timeouts
	conn net.Conn // nil when idle; used by the token holder only
}

// Send sends cmd within its command's deadline.
func (s *socketTransport) Send(cmd []byte) ([]byte, error) {
	return s.sendBy(cmd, time.Now().Add(s.to.forCommand(cmd)))
}

func (s *socketTransport) sendBy(cmd []byte, deadline time.Time) ([]byte, error) {
	reused := s.conn != nil
	if err := s.write(cmd, deadline); err != nil {
		if !reused {
			return nil, err
		}
		// The connection went stale (swtpm restarted while we were idle):
		// the command never reached a TPM, so sending it again is safe.
		if err = s.write(cmd, deadline); err != nil {
			return nil, err
		}
	}
	rsp, err := readResponse(s.conn)
	if err != nil {
		s.release()
		return nil, fmt.Errorf("%w: read response: %w", ErrUnavailable, err)
	}
	return rsp, nil
}

func (s *socketTransport) write(cmd []byte, deadline time.Time) error {
	if s.conn == nil {
		conn, err := net.DialTimeout("unix", s.path, time.Until(deadline))
		if err != nil {
			return fmt.Errorf("%w: connect %s: %w", ErrUnavailable, s.path, err)
		}
		s.conn = conn
	}
	if err := s.conn.SetDeadline(deadline); err != nil {
		s.release()
		return fmt.Errorf("%w: set deadline: %w", ErrUnavailable, err)
	}
	if _, err := s.conn.Write(cmd); err != nil {
		s.release()
		return fmt.Errorf("%w: send command: %w", ErrUnavailable, err)
	}
	return nil
}

// release closes the connection; the next command dials again.
func (s *socketTransport) release() {
	if s.conn != nil {
		s.conn.Close()
		s.conn = nil
	}
}

// Idle is called by the device when no command has come for a while.
func (s *socketTransport) Idle() { s.release() }

func (s *socketTransport) Close() error { s.release(); return nil }

// readResponse reads one TPM response: a 10-byte header whose size field
// gives the length of the rest.
func readResponse(r io.Reader) ([]byte, error) {
	var hdr [10]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < 10 || size > maxResponse {
		return nil, fmt.Errorf("response size %d out of range", size)
	}
	rsp := make([]byte, size)
	copy(rsp, hdr[:])
	if _, err := io.ReadFull(r, rsp[10:]); err != nil {
		return nil, err
	}
	return rsp, nil
}

// deviceTransport talks to a kernel TPM device. Each command runs on a
// goroutine of its own, and the caller waits for it until the command's
// deadline: a command in the TPM holds the device file's lock in the
// kernel, and no read, write or poll on that file returns before the TPM
// answers or the kernel gives up on it (120 s for most commands, 300 s for
// key generation).
//
// A command abandoned at its deadline stays in the kernel, and the TPM
// takes no other command before it returns: until then every command fails
// at once with ErrUnavailable, instead of waiting a deadline of its own
// behind it. On a raw device, which one file at a time may open, the
// abandoned command's goroutine reads its answer, and the file takes
// commands again. On a resource manager, the file is let go of: its
// goroutine closes it once the command has returned (which flushes every
// object and session brokerd had loaded through it), and the next command
// opens the device again. Either way brokerd signs again as soon as the
// TPM answers.
type deviceTransport struct {
	open func() (*os.File, error) // opens the device (blocking)
	rm   bool
	to   timeouts

	f     *os.File      // nil after a failed command on a resource manager
	stuck chan struct{} // closed when the abandoned command returns; nil if none
}

func newDeviceTransport(f *os.File, path string, rm bool, to timeouts) *deviceTransport {
	open := func() (*os.File, error) {
		f, err := openDevice(path)
		if err != nil {
			return nil, fmt.Errorf("reopen %s: %w", path, err)
		}
		return f, nil
	}
	return &deviceTransport{open: open, f: f, rm: rm, to: to}
}

// Send sends cmd within its command's deadline.
func (d *deviceTransport) Send(cmd []byte) ([]byte, error) {
	return d.sendBy(cmd, time.Now().Add(d.to.forCommand(cmd)))
}

func (d *deviceTransport) sendBy(cmd []byte, deadline time.Time) ([]byte, error) {
	if err := d.ready(); err != nil {
		return nil, err
	}
	type result struct {
		rsp []byte
		err error
	}
	f := d.f
	ch := make(chan result, 1)
	done := make(chan struct{})
	go func() {
		rsp, err := roundTrip(f, cmd)
		close(done) // before the result: the next command finds it returned
		ch <- result{rsp, err}
	}()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case r := <-ch:
		if r.err != nil {
			d.letGo(done)
		}
		return r.rsp, r.err
	case <-timer.C:
		d.letGo(done)
		return nil, fmt.Errorf("%w: no answer by the command's deadline", ErrUnavailable)
	}
}

// ready makes the device take a command: it fails while an abandoned
// command is still in the TPM, and opens the device again after a
// resource manager's file was let go of.
func (d *deviceTransport) ready() error {
	if d.stuck != nil {
		select {
		case <-d.stuck:
			d.stuck = nil
		default:
			return fmt.Errorf("%w: an earlier command has not returned", ErrUnavailable)
		}
	}
	if d.f == nil {
		f, err := d.open()
		if err != nil {
			return err
		}
		d.f = f
	}
	return nil
}

// letGo gives up on the file after a failed command, whose goroutine
// closes done when it returns: no command goes to the TPM before that. On
// a resource manager the file is closed then (closing waits for the TPM in
// the kernel) and the next command opens the device again; on a raw device
// the next command uses the same file.
func (d *deviceTransport) letGo(done chan struct{}) {
	d.stuck = done
	if !d.rm {
		return
	}
	f := d.f
	d.f = nil
	go func() {
		<-done
		f.Close()
	}()
}

// roundTrip writes a command to a blocking device file and reads its
// answer.
func roundTrip(f *os.File, cmd []byte) ([]byte, error) {
	if _, err := f.Write(cmd); err != nil {
		return nil, fmt.Errorf("%w: send command: %w", ErrUnavailable, err)
	}
	// The kernel hands out a response in one read of a large enough buffer.
	buf := make([]byte, maxResponse)
	n, err := f.Read(buf)
	if err != nil {
		return nil, fmt.Errorf("%w: read response: %w", ErrUnavailable, err)
	}
	rsp, err := readResponse(bytes.NewReader(buf[:n]))
	if err != nil {
		return nil, fmt.Errorf("%w: read response: %w", ErrUnavailable, err)
	}
	return rsp, nil
}

// Close closes the device's file, if it has one.
func (d *deviceTransport) Close() error {
	if d.f == nil {
		return nil
	}
	return d.f.Close()
}
