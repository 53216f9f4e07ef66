// Package swtpmtest runs a real swtpm process for tests: a TPM 2.0 on a
// unix socket in a temporary directory, stopped when the test ends. Tests
// can kill, pause, resume and restart it to exercise failure handling.
//
// Every TPM has a directory, a socket and a process of its own, so tests
// that start one can run in parallel; swtpm dies with the test binary even
// when that is killed (see internal/testproc).
//
// swtpm is required, not optional: a test that needs a TPM fails when swtpm
// is missing (`make test` installs it), so CI never passes without running
// the TPM code.
package swtpmtest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/brokerd/brokerd/internal/testproc"
)

// TPM is one swtpm process and its state directory.
type TPM struct {
	t      testing.TB
	dir    string
	socket string
	cmd    *exec.Cmd
	exited <-chan error
}

// Start runs a fresh swtpm (new endorsement and owner seeds).
func Start(t testing.TB) *TPM {
	t.Helper()
	s := newTPM(t)
	s.start()
	return s
}

// newTPM makes the directories of a swtpm that is not running yet.
func newTPM(t testing.TB) *TPM {
	t.Helper()
	if _, err := exec.LookPath("swtpm"); err != nil {
		t.Fatalf("swtpm is not installed: run `make test` (it installs swtpm) or `apt-get install swtpm`")
	}
	// Unix socket paths are limited to 108 bytes: keep them short.
	dir, err := os.MkdirTemp("", "swtpm")
	if err != nil {
		t.Fatal(err)
	}
	s := &TPM{t: t, dir: dir, socket: filepath.Join(dir, "s")}
	if err := os.Mkdir(filepath.Join(dir, "state"), 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.stop(syscall.SIGKILL)
		os.RemoveAll(dir)
	})
	return s
}

// Address is the brokerd TPM address of this swtpm.
func (s *TPM) Address() string { return "swtpm:" + s.socket }

// Socket is the path of the TPM command socket.
func (s *TPM) Socket() string { return s.socket }

func (s *TPM) start() {
	s.t.Helper()
	os.Remove(s.socket)
	os.Remove(s.socket + ".ctrl")
	// The test binds the command socket and hands it to swtpm, so it
	// takes connections from the start: the first command waits in the
	// socket's backlog until swtpm answers it, and nothing polls for
	// swtpm to be ready.
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: s.socket, Net: "unix"})
	if err != nil {
		s.t.Fatalf("swtpm socket: %v", err)
	}
	l.SetUnlinkOnClose(false)
	sock, err := l.File()
	l.Close()
	if err != nil {
		s.t.Fatalf("swtpm socket: %v", err)
	}
	s.cmd = exec.Command("swtpm", "socket", "--tpm2",
		"--server", "type=unixio,fd=3",
		"--ctrl", "type=unixio,path="+s.socket+".ctrl",
		"--flags", "not-need-init,startup-clear",
		"--tpmstate", "dir="+filepath.Join(s.dir, "state"),
		"--log", "file="+filepath.Join(s.dir, "log"))
	s.cmd.ExtraFiles = []*os.File{sock}
	s.exited, err = testproc.Start(s.cmd)
	sock.Close() // swtpm's copy is the only one: its exit closes the socket
	if err != nil {
		s.t.Fatalf("start swtpm: %v", err)
	}
	if err := ping(s.socket); err != nil {
		log, _ := os.ReadFile(filepath.Join(s.dir, "log"))
		s.t.Fatalf("swtpm does not answer: %v\n%s", err, log)
	}
}

// ping sends TPM2_GetRandom(8) and checks for a success response; a swtpm
// that exits at start closes the socket and fails it at once.
func ping(socket string) error {
	c, err := net.DialTimeout("unix", socket, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	cmd := []byte{0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7b, 0, 8}
	if _, err := c.Write(cmd); err != nil {
		return err
	}
	var hdr [10]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return err
	}
	if rc := binary.BigEndian.Uint32(hdr[6:]); rc != 0 {
		return fmt.Errorf("GetRandom: rc 0x%x", rc)
	}
	return nil
}

func (s *TPM) stop(sig syscall.Signal) {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGCONT)
	s.cmd.Process.Signal(sig)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
	}
	s.cmd = nil
	if sig == syscall.SIGTERM {
		// swtpm removes a socket it bound itself; this one it was given.
		os.Remove(s.socket)
	}
}

// Kill ends swtpm with SIGKILL, as a crash would; its socket file stays.
func (s *TPM) Kill() { s.t.Helper(); s.stop(syscall.SIGKILL) }

// Stop ends swtpm with SIGTERM; it removes its socket.
func (s *TPM) Stop() { s.t.Helper(); s.stop(syscall.SIGTERM) }

// Restart starts swtpm again on the same state and socket.
func (s *TPM) Restart() {
	s.t.Helper()
	if s.cmd != nil {
		s.t.Fatal("swtpmtest: Restart while running")
	}
	s.start()
}

// StateDir is the directory of swtpm's persistent state; copy it while
// swtpm is stopped.
func (s *TPM) StateDir() string { return filepath.Join(s.dir, "state") }

// Pause stops swtpm with SIGSTOP: it stays alive but answers nothing.
func (s *TPM) Pause() {
	s.t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		s.t.Fatal(err)
	}
}

// Resume continues a paused swtpm.
func (s *TPM) Resume() {
	s.t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGCONT); err != nil && !errors.Is(err, os.ErrProcessDone) {
		s.t.Fatal(err)
	}
}
