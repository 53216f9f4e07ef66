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
	"sync"
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

// openDevice opens a kernel TPM device.
func openDevice(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
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

// deviceTransport talks to a kernel TPM device. When the kernel supports
// poll on the device (Linux 4.18+), reads and writes carry deadlines;
// otherwise a command runs on a helper goroutine and a timeout abandons it,
// refusing further commands until the abandoned one returns.
//
// A command whose response did not come within its deadline stays queued
// in the kernel: until its response is read (or the kernel gives up on
// the TPM, 120 s for most commands), every later write on that file fails
// with EBUSY. So after a failed round trip the transport either reads
// that response before the next command (a raw device, which one file at
// a time may open) or, on a resource manager, lets go of the file and
// opens the device again for the next command. Closing the old file waits
// in the kernel until the command it queued has run, so it is closed on a
// goroutine of its own; closing it also flushes every object and session
// brokerd had loaded through it.
type deviceTransport struct {
	path      string
	rm        bool
	to        timeouts
	deadlines bool

	f       *os.File // nil after a failed round trip on a resource manager
	pending bool     // a raw device's response is still to be read

	mu    sync.Mutex
	stuck chan struct{} // closed when an abandoned command returns; nil if none
}

func newDeviceTransport(f *os.File, path string, rm bool, to timeouts) *deviceTransport {
	d := &deviceTransport{f: f, path: path, rm: rm, to: to}
	d.deadlines = f.SetDeadline(time.Time{}) == nil
	return d
}

// Send sends cmd within its command's deadline.
func (d *deviceTransport) Send(cmd []byte) ([]byte, error) {
	return d.sendBy(cmd, time.Now().Add(d.to.forCommand(cmd)))
}

func (d *deviceTransport) sendBy(cmd []byte, deadline time.Time) ([]byte, error) {
	if !d.deadlines {
		return d.sendAbandoning(cmd, time.Until(deadline))
	}
	if err := d.ready(deadline); err != nil {
		return nil, err
	}
	if err := d.f.SetDeadline(deadline); err != nil {
		return nil, fmt.Errorf("%w: set deadline: %w", ErrUnavailable, err)
	}
	if _, err := d.f.Write(cmd); err != nil {
		d.letGo(false)
		return nil, fmt.Errorf("%w: send command: %w", ErrUnavailable, err)
	}
	rsp, err := d.response()
	if err != nil {
		d.letGo(true)
		return nil, err
	}
	return rsp, nil
}

// ready makes the device take a command: it opens the device again after
// a resource manager's file was let go, and reads the response of a raw
// device's command that missed its deadline, by the new deadline.
func (d *deviceTransport) ready(deadline time.Time) error {
	if d.f == nil {
		f, err := openDevice(d.path)
		if err != nil {
			return fmt.Errorf("reopen %s: %w", d.path, err)
		}
		d.f = f
	}
	if !d.pending {
		return nil
	}
	if err := d.f.SetDeadline(deadline); err != nil {
		return fmt.Errorf("%w: set deadline: %w", ErrUnavailable, err)
	}
	if _, err := d.response(); err != nil {
		return fmt.Errorf("tpm: an earlier command has not returned: %w", err)
	}
	d.pending = false
	return nil
}

// letGo gives up on the file after a failed round trip: on a resource
// manager it is closed (on its own goroutine, see deviceTransport) and the
// next command opens the device again; on a raw device, whose one file
// cannot be opened twice, the response of a command that reached the
// kernel (queued) is read before the next command.
func (d *deviceTransport) letGo(queued bool) {
	if !d.rm {
		d.pending = d.pending || queued
		return
	}
	go d.f.Close()
	d.f = nil
}

// response reads one response within the file's deadline.
func (d *deviceTransport) response() ([]byte, error) {
	// The kernel hands out a response in one read of a large enough buffer.
	buf := make([]byte, maxResponse)
	n, err := d.read(buf)
	if err != nil {
		return nil, fmt.Errorf("%w: read response: %w", ErrUnavailable, err)
	}
	rsp, err := readResponse(bytes.NewReader(buf[:n]))
	if err != nil {
		return nil, fmt.Errorf("%w: read response: %w", ErrUnavailable, err)
	}
	return rsp, nil
}

// sendAbandoning runs a command on a helper goroutine (a kernel without
// poll on the device: no deadlines on the file) and abandons it after
// timeout, refusing further commands until it returns.
func (d *deviceTransport) sendAbandoning(cmd []byte, timeout time.Duration) ([]byte, error) {
	d.mu.Lock()
	stuck := d.stuck
	d.mu.Unlock()
	if stuck != nil {
		select {
		case <-stuck:
		default:
			return nil, fmt.Errorf("tpm: an earlier command has not returned: %w", ErrUnavailable)
		}
	}
	type result struct {
		rsp []byte
		err error
	}
	ch := make(chan result, 1)
	done := make(chan struct{})
	go func() {
		rsp, err := d.roundTrip(cmd)
		ch <- result{rsp, err}
		close(done)
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case r := <-ch:
		return r.rsp, r.err
	case <-timer.C:
		d.mu.Lock()
		d.stuck = done
		d.mu.Unlock()
		return nil, fmt.Errorf("tpm: no answer within %v: %w", timeout, ErrUnavailable)
	}
}

func (d *deviceTransport) roundTrip(cmd []byte) ([]byte, error) {
	if _, err := d.f.Write(cmd); err != nil {
		return nil, fmt.Errorf("%w: send command: %w", ErrUnavailable, err)
	}
	return d.response()
}

// read reads the response. The device is in Go's poller (non-blocking):
// while the command still runs, the kernel's read returns 0 bytes rather
// than EAGAIN, which os.File.Read would turn into io.EOF, leaving the
// response unread in the kernel (every later write then fails with
// EBUSY). So 0 bytes means "wait until readable", within the deadline.
func (d *deviceTransport) read(buf []byte) (int, error) {
	if !d.deadlines {
		return d.f.Read(buf) // blocking fd: read waits for the response
	}
	rc, err := d.f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		n, rerr = syscall.Read(int(fd), buf)
		return !(errors.Is(rerr, syscall.EAGAIN) || (rerr == nil && n == 0))
	})
	if err != nil {
		return 0, err
	}
	return n, rerr
}

// Close closes the device's file, if it has one.
func (d *deviceTransport) Close() error {
	if d.f == nil {
		return nil
	}
	return d.f.Close()
}
