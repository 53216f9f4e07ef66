package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
)

// ErrNoDaemon is returned by Call when no daemon listens on the socket.
var ErrNoDaemon = errors.New("admin: the daemon is not running")

// ErrDenied is returned by Call when the socket refuses the caller.
var ErrDenied = errors.New("admin: permission denied")

// Local is the caller's side of a call: what the command's I/O reaches.
type Local struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Prompt asks the user a question without echo (nil: no terminal).
	Prompt func(question string) ([]byte, error)
}

// Dial connects to the daemon's socket. ErrNoDaemon: nobody listens
// there; ErrDenied: the socket's permissions keep the caller out.
func Dial(ctx context.Context, path string) (*net.UnixConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	switch {
	case err == nil:
		return c.(*net.UnixConn), nil
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED):
		return nil, ErrNoDaemon
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return nil, fmt.Errorf("%w: %s is for root and the admin group", ErrDenied, path)
	}
	return nil, fmt.Errorf("admin: %w", err)
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
	for {
		var m message
		if err := cn.recv(&m); err != nil {
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
		case kindRead:
			reply.Data, reply.Err = fileResult(os.ReadFile(m.Path))
		case kindWrite:
			reply.Err = errText(os.WriteFile(m.Path, m.Data, os.FileMode(m.Perm)))
		case kindMkdir:
			reply.Err = errText(os.MkdirAll(m.Path, os.FileMode(m.Perm)))
		case kindStdin:
			reply = readStdin(l.Stdin, m.Size)
		case kindPrompt:
			if l.Prompt == nil {
				reply.Err = "no terminal to ask on"
			} else {
				reply.Data, reply.Err = fileResult(l.Prompt(string(m.Data)))
			}
		default:
			return 0, fmt.Errorf("admin: unknown message %q from the daemon", m.Kind)
		}
		reply.Kind = kindReply
		if err := cn.send(reply); err != nil {
			return 0, fmt.Errorf("admin: send: %w", err)
		}
	}
}

func readStdin(r io.Reader, size int) message {
	if r == nil {
		return message{EOF: true}
	}
	buf := make([]byte, max(1, min(size, 1<<20)))
	n, err := io.ReadFull(r, buf)
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
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
