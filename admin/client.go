package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"

	"github.com/brokerd/brokerd/internal/files"
)

// ErrNoDaemon is returned by Dial when no daemon listens on the socket.
var ErrNoDaemon = errors.New("admin: the daemon is not running")

// ErrDenied is returned when the socket refuses the caller.
var ErrDenied = errors.New("admin: permission denied")

// ErrNoPrompt is returned by Session.Prompt when the caller cannot ask
// (Local.Prompt is nil: no terminal, or not this command).
var ErrNoPrompt = errors.New(noPrompt)

// noPrompt is the reply to a prompt that the caller cannot ask.
const noPrompt = "this command asks for no password"

// Local is the caller's side of a call: what the command's I/O reaches,
// and how far. The daemon is trusted with the TPM, not with the caller's
// account: it may touch only what Allow lets it, and ask for a password
// only when Prompt is set.
type Local struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Prompt asks the user a question without echo; nil: the command may
	// not ask.
	Prompt func(question string) ([]byte, error)
	// Allow says whether the daemon may read ("read"), write ("write") or
	// create ("mkdir") path; nil allows nothing.
	Allow func(op, path string) error
}

// Dial connects to the daemon's socket and checks that it is the daemon:
// the socket's directory must be writable by its owner only, and the
// process listening must be root or that owner. ErrNoDaemon: nobody
// listens there; ErrDenied: the socket's permissions keep the caller out.
func Dial(ctx context.Context, path string) (*net.UnixConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	switch {
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED):
		return nil, ErrNoDaemon
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return nil, fmt.Errorf("%w: %s is for root and the admin group", ErrDenied, path)
	case err != nil:
		return nil, fmt.Errorf("admin: %w", err)
	}
	uc := c.(*net.UnixConn)
	owner, err := privateDir(filepath.Dir(path))
	if err == nil {
		var p Peer
		if p, err = peerOf(uc); err == nil && p.UID != 0 && p.UID != owner {
			err = fmt.Errorf("admin: %s is served by %s, neither root nor the owner of its directory: not the daemon", path, p)
		}
	}
	if err != nil {
		uc.Close()
		return nil, err
	}
	return uc, nil
}

// privateDir checks that only its owner can create files in dir, and
// returns the owner's uid.
func privateDir(dir string) (uint32, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return 0, fmt.Errorf("admin: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("admin: %s: no owner", dir)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return 0, fmt.Errorf("admin: %s is writable by others than its owner: no admin socket there", dir)
	}
	return st.Uid, nil
}

// Exec runs req in the daemon listening on socket, serving its I/O from
// l, and returns the command's exit code. ErrNoDaemon: no daemon listens
// there (the caller may run the command itself).
func Exec(ctx context.Context, socket string, req Request, l Local) (int, error) {
	c, err := Dial(ctx, socket)
	if err != nil {
		return 0, err
	}
	return Call(c, req, l)
}

// Call runs req in the daemon over c, serving its I/O from l, and returns
// the command's exit code. A refusal by the daemon is an error wrapping
// ErrDenied.
func Call(c net.Conn, req Request, l Local) (int, error) {
	defer c.Close()
	cn := newConn(c)
	if err := cn.send(req); err != nil {
		// A daemon that refuses the caller says why and hangs up at once.
		var m message
		if cn.recv(&m) == nil && m.Kind == kindExit && m.Err != "" {
			return m.Code, fmt.Errorf("%w: %s", ErrDenied, m.Err)
		}
		return 0, fmt.Errorf("admin: send: %w", err)
	}
	// Messages are read by their own goroutine, so that a call waiting on
	// the user (standard input) still sees the daemon hang up.
	msgs, ended := make(chan message), make(chan error, 1)
	go func() {
		for {
			var m message
			if err := cn.recv(&m); err != nil {
				ended <- err
				return
			}
			msgs <- m
		}
	}()
	for {
		var m message
		select {
		case m = <-msgs:
		case err := <-ended:
			return 0, fmt.Errorf("admin: the daemon ended the call: %w", err)
		}
		var reply message
		switch m.Kind {
		case kindExit:
			if m.Err != "" {
				return m.Code, fmt.Errorf("%w: %s", ErrDenied, m.Err)
			}
			return m.Code, nil
		case kindStdout:
			l.Stdout.Write(m.Data)
			continue
		case kindStderr:
			l.Stderr.Write(m.Data)
			continue
		case kindStdin:
			read := make(chan message, 1)
			go func() { read <- readStdin(l.Stdin, m.Size) }()
			select {
			case reply = <-read:
			case err := <-ended:
				return 0, fmt.Errorf("admin: the daemon ended the call: %w", err)
			}
		case kindRead, kindWrite, kindMkdir, kindCheck, kindPrompt:
			reply = l.answer(m)
		default:
			return 0, fmt.Errorf("admin: unknown message %q from the daemon", m.Kind)
		}
		reply.Kind = kindReply
		if err := cn.send(reply); err != nil {
			return 0, fmt.Errorf("admin: send: %w", err)
		}
	}
}

// answer does what the daemon asks of the caller's files or terminal, as
// far as l allows it.
func (l Local) answer(m message) (reply message) {
	switch m.Kind {
	case kindRead:
		if reply.Err = errText(l.allow("read", m.Path)); reply.Err == "" {
			reply.Data, reply.Err = fileResult(os.ReadFile(m.Path))
		}
	case kindWrite:
		if reply.Err = errText(l.allow("write", m.Path)); reply.Err == "" {
			reply.Err = errText(files.Write(m.Path, m.Data, os.FileMode(m.Perm).Perm(), m.Excl))
		}
	case kindCheck:
		if reply.Err = errText(l.allow("write", m.Path)); reply.Err == "" {
			reply.Err = errText(files.Writable(m.Path))
		}
	case kindMkdir:
		if reply.Err = errText(l.allow("mkdir", m.Path)); reply.Err == "" {
			reply.Err = errText(os.MkdirAll(m.Path, os.FileMode(m.Perm).Perm()))
		}
	case kindPrompt:
		if l.Prompt == nil {
			reply.Err = noPrompt
		} else {
			reply.Data, reply.Err = fileResult(l.Prompt(string(m.Data)))
		}
	}
	return reply
}

func (l Local) allow(op, path string) error {
	if l.Allow == nil {
		return fmt.Errorf("%s %s: this command touches no files", op, path)
	}
	return l.Allow(op, path)
}

func readStdin(r io.Reader, size int) message {
	if r == nil {
		return message{EOF: true}
	}
	buf := make([]byte, max(1, min(size, 1<<20)))
	n, err := r.Read(buf)
	switch {
	case errors.Is(err, io.EOF):
		return message{Data: buf[:n], EOF: true}
	case err != nil:
		return message{Data: buf[:n], Err: err.Error()}
	}
	return message{Data: buf[:n]}
}

func fileResult(data []byte, err error) ([]byte, string) { return data, errText(err) }

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
