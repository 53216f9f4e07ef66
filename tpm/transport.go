package tpm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
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
		f, err := os.OpenFile(addr.Path, os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("%w: open %s: %w", ErrUnavailable, addr, err)
		}
		fi, err := f.Stat()
		if err == nil && fi.Mode()&os.ModeCharDevice == 0 {
			f.Close()
			return nil, fmt.Errorf("tpm: open %s: not a character device", addr)
		}
		return newDeviceTransport(f, to), nil
	case KindSimulator:
		return openSimulator(simSeed)
	}
	return nil, fmt.Errorf("tpm: open %s: unknown address kind", addr)
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

func (s *socketTransport) Send(cmd []byte) ([]byte, error) {
	timeout := s.to.forCommand(cmd)
	deadline := time.Now().Add(timeout)
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
type deviceTransport struct {
	f         *os.File
	to        timeouts
	deadlines bool

	mu    sync.Mutex
	stuck chan struct{} // closed when an abandoned command returns; nil if none
}

func newDeviceTransport(f *os.File, to timeouts) *deviceTransport {
	d := &deviceTransport{f: f, to: to}
	d.deadlines = f.SetDeadline(time.Time{}) == nil
	return d
}

func (d *deviceTransport) Send(cmd []byte) ([]byte, error) {
	timeout := d.to.forCommand(cmd)
	if d.deadlines {
		if err := d.f.SetDeadline(time.Now().Add(timeout)); err != nil {
			return nil, fmt.Errorf("%w: set deadline: %w", ErrUnavailable, err)
		}
		return d.roundTrip(cmd)
	}
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

func (d *deviceTransport) Close() error { return d.f.Close() }
