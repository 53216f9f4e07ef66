package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Peer is the process at the other end of the socket, as the kernel
// tells it (SO_PEERCRED).
type Peer struct {
	UID, GID uint32
	PID      int32
}

// String names the peer for logs and audit records.
func (p Peer) String() string {
	name := "uid " + strconv.FormatUint(uint64(p.UID), 10)
	if u, err := user.LookupId(strconv.FormatUint(uint64(p.UID), 10)); err == nil {
		name = u.Username + " (" + name + ")"
	}
	return fmt.Sprintf("local user %s, pid %d", name, p.PID)
}

// Self names this process's user for audit records, as Peer.String names
// a caller of the socket.
func Self() string {
	if u, err := user.Current(); err == nil {
		return fmt.Sprintf("local user %s (uid %s)", u.Username, u.Uid)
	}
	return fmt.Sprintf("local user uid %d", os.Getuid())
}

// Authorizer decides whether a peer may call.
type Authorizer func(Peer) error

// RootOrGroup allows root, the daemon's own user and members (primary or
// supplementary) of group gid; gid < 0 means no group.
func RootOrGroup(gid int) Authorizer {
	self := uint32(os.Getuid())
	return func(p Peer) error {
		if p.UID == 0 || p.UID == self || (gid >= 0 && p.GID == uint32(gid)) {
			return nil
		}
		if gid >= 0 {
			if u, err := user.LookupId(strconv.FormatUint(uint64(p.UID), 10)); err == nil {
				if ids, err := u.GroupIds(); err == nil && slices.Contains(ids, strconv.Itoa(gid)) {
					return nil
				}
			}
		}
		return fmt.Errorf("%s is neither root nor in the admin group", p)
	}
}

// Handler runs one call and returns the command's exit code.
type Handler func(ctx context.Context, s *Session) int

// Session is one call as the daemon sees it: the command line and, for
// the command, the caller's files, streams and terminal.
type Session struct {
	Request Request
	Peer    Peer

	mu   sync.Mutex // one exchange at a time
	c    *conn
	conn net.Conn
	// ctx ends when the daemon stops; the stop sets conn's deadline to
	// now, and no exchange may set a later one after that.
	ctx context.Context
	// gone is the first transport error: the caller has gone away (or the
	// daemon is stopping) and every later exchange fails with it.
	gone error
}

// exchangeTimeout bounds one exchange with the caller, a password typed
// at a prompt included: a caller that stops answering must not hold the
// daemon's other admin commands up.
const exchangeTimeout = 5 * time.Minute

// exchange sends m and, for requests, waits for the reply.
func (s *Session) exchange(m message, wantReply bool) (message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gone != nil {
		return message{}, s.gone
	}
	s.conn.SetDeadline(time.Now().Add(exchangeTimeout))
	if s.ctx != nil && s.ctx.Err() != nil {
		// The daemon is stopping: keep (or restore) the stop's deadline,
		// which the line above may have pushed five minutes away.
		s.conn.SetDeadline(time.Now())
	}
	if err := s.c.send(m); err != nil {
		s.gone = fmt.Errorf("admin: the caller went away: %w", err)
		return message{}, s.gone
	}
	if !wantReply {
		return message{}, nil
	}
	var r message
	if err := s.c.recv(&r); err != nil {
		s.gone = fmt.Errorf("admin: the caller went away: %w", err)
		return message{}, s.gone
	}
	if r.Kind != kindReply {
		s.gone = fmt.Errorf("admin: the caller sent %q, not a reply", r.Kind)
		return message{}, s.gone
	}
	if r.Err != "" {
		return r, errors.New(r.Err)
	}
	return r, nil
}

type streamWriter struct {
	s    *Session
	kind string
}

func (w streamWriter) Write(p []byte) (int, error) {
	if _, err := w.s.exchange(message{Kind: w.kind, Data: p}, false); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Stdout is the caller's standard output.
func (s *Session) Stdout() io.Writer { return streamWriter{s, kindStdout} }

// Stderr is the caller's standard error.
func (s *Session) Stderr() io.Writer { return streamWriter{s, kindStderr} }

// Stdin is the caller's standard input.
func (s *Session) Stdin() io.Reader { return &stdinReader{s: s} }

type stdinReader struct {
	s   *Session
	eof bool
}

func (r *stdinReader) Read(p []byte) (int, error) {
	if r.eof {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	m, err := r.s.exchange(message{Kind: kindStdin, Size: min(len(p), 1<<20)}, true)
	if err != nil {
		return 0, err
	}
	n := copy(p, m.Data)
	if m.EOF {
		r.eof = true
		if n == 0 {
			return 0, io.EOF
		}
	}
	return n, nil
}

// ReadFile reads the caller's file.
func (s *Session) ReadFile(path string) ([]byte, error) {
	m, err := s.exchange(message{Kind: kindRead, Path: path}, true)
	return m.Data, err
}

// WriteFile writes the caller's file (not through a symbolic link; an
// existing file gets mode perm).
func (s *Session) WriteFile(path string, data []byte, perm os.FileMode) error {
	_, err := s.exchange(message{Kind: kindWrite, Path: path, Data: data, Perm: uint32(perm.Perm())}, true)
	return err
}

// CreateFile writes a new file of the caller's: one that exists is an
// error (for private keys).
func (s *Session) CreateFile(path string, data []byte, perm os.FileMode) error {
	_, err := s.exchange(message{Kind: kindWrite, Path: path, Data: data, Perm: uint32(perm.Perm()), Excl: true}, true)
	return err
}

// MkdirAll creates the caller's directory and its parents.
func (s *Session) MkdirAll(path string, perm os.FileMode) error {
	_, err := s.exchange(message{Kind: kindMkdir, Path: path, Perm: uint32(perm.Perm())}, true)
	return err
}

// Writable checks, without writing, that WriteFile can write the
// caller's path.
func (s *Session) Writable(path string) error {
	_, err := s.exchange(message{Kind: kindCheck, Path: path}, true)
	return err
}

// Prompt asks the caller's user question on their terminal, without echo;
// ErrNoPrompt when the caller has no terminal to ask on.
func (s *Session) Prompt(question string) ([]byte, error) {
	m, err := s.exchange(message{Kind: kindPrompt, Data: []byte(question)}, true)
	if err != nil && err.Error() == noPrompt {
		return nil, ErrNoPrompt
	}
	return m.Data, err
}

// Listen creates the socket at path, mode 0660, group gid (gid < 0 keeps
// the daemon's group). Its directory must be writable by its owner only,
// root or the daemon's user (callers check that too). A socket left by a
// daemon that died is replaced; one a live daemon answers on is an error.
func Listen(path string, gid int) (*net.UnixListener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	owner, err := privateDir(dir)
	if err != nil {
		return nil, err
	}
	if owner != 0 && owner != uint32(os.Geteuid()) {
		return nil, fmt.Errorf("admin: %s belongs to uid %d, neither root nor this daemon's user", dir, owner)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("admin: %s exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("admin: %s: another daemon is listening", path)
		}
		os.Remove(path)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("admin: listen %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		l.Close()
		return nil, fmt.Errorf("admin: %w", err)
	}
	if gid >= 0 {
		if err := os.Lchown(path, -1, gid); err != nil {
			l.Close()
			return nil, fmt.Errorf("admin: %w", err)
		}
	}
	return l, nil
}

// Server serves calls on a listener, one at a time.
type Server struct {
	l    *net.UnixListener
	auth Authorizer
	h    Handler
	log  *slog.Logger
	wg   sync.WaitGroup
	mu   sync.Mutex // one command at a time
}

// Serve accepts calls on l until Close; auth admits callers, h runs them.
func Serve(ctx context.Context, l *net.UnixListener, auth Authorizer, h Handler, log *slog.Logger) *Server {
	s := &Server{l: l, auth: auth, h: h, log: log}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := l.AcceptUnix()
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					log.Error("admin socket", "err", err)
				}
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				s.call(ctx, c)
			}()
		}
	}()
	return s
}

// Close stops accepting and waits for the calls in progress.
func (s *Server) Close() error {
	err := s.l.Close()
	s.wg.Wait()
	return err
}

func (s *Server) call(ctx context.Context, c *net.UnixConn) {
	// A stopping daemon ends every call: what waits on the caller fails.
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	peer, err := peerOf(c)
	cn := newConn(c)
	if err == nil {
		err = s.auth(peer)
	}
	if err != nil {
		s.log.Warn("admin socket: caller refused", "peer", peer.String(), "err", err)
		cn.send(message{Kind: kindExit, Code: 1, Err: err.Error()})
		return
	}
	var req Request
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := cn.recv(&req); err != nil {
		cn.send(message{Kind: kindExit, Code: 2, Err: "admin: no request: " + err.Error()})
		return
	}
	c.SetReadDeadline(time.Time{})
	sess := &Session{Request: req, Peer: peer, c: cn, conn: c, ctx: ctx}
	code := s.run(ctx, sess)
	sess.exchange(message{Kind: kindExit, Code: code}, false)
}

// run runs one command at a time; a command that panics fails alone.
func (s *Server) run(ctx context.Context, sess *Session) (code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("admin command panicked", "args", sess.Request.Args, "peer", sess.Peer.String(), "panic", r, "stack", string(debug.Stack()))
			fmt.Fprintln(sess.Stderr(), "brokerd: internal error (the daemon's log has the details)")
			code = 1
		}
	}()
	return s.h(ctx, sess)
}

// peerOf asks the kernel who is at the other end.
func peerOf(c *net.UnixConn) (Peer, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return Peer{}, err
	}
	var cred *syscall.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return Peer{}, err
	}
	if credErr != nil {
		return Peer{}, fmt.Errorf("admin: peer credentials: %w", credErr)
	}
	return Peer{UID: cred.Uid, GID: cred.Gid, PID: cred.Pid}, nil
}
