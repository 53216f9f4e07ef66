package admin_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/brokerd/brokerd/admin"
)

// A child process of this test binary, started as another user, dials
// the socket named by $ADMIN_TEST_DIAL and reports what happened.
func TestMain(m *testing.M) {
	if path := os.Getenv("ADMIN_TEST_DIAL"); path != "" {
		c, err := admin.Dial(context.Background(), path)
		if err != nil {
			fmt.Println("dial:", err)
			os.Exit(0)
		}
		code, err := admin.Call(c, admin.Request{Args: []string{"whoami"}}, admin.Local{Stdout: os.Stdout, Stderr: os.Stderr})
		fmt.Println("call:", code, err)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func serve(t *testing.T, auth admin.Authorizer, h admin.Handler) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "admin.sock")
	l, err := admin.Listen(path, -1)
	if err != nil {
		t.Fatal(err)
	}
	srv := admin.Serve(context.Background(), l, auth, h, slog.New(slog.DiscardHandler))
	t.Cleanup(func() { srv.Close() })
	return path
}

func call(t *testing.T, path string, req admin.Request, l admin.Local) (int, error) {
	t.Helper()
	c, err := admin.Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	return admin.Call(c, req, l)
}

// TestCallRunsWithTheCallersIO: the command's files, streams and prompt
// are the caller's.
func TestCallRunsWithTheCallersIO(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	in := filepath.Join(dir, "in.txt")
	os.WriteFile(in, []byte("file content"), 0o600)
	var seen admin.Session
	path := serve(t, admin.RootOrGroup(-1), func(ctx context.Context, s *admin.Session) int {
		seen.Request, seen.Peer = s.Request, s.Peer
		data, err := s.ReadFile(s.Request.Args[0])
		if err != nil {
			fmt.Fprintln(s.Stderr(), "read:", err)
			return 1
		}
		stdin, err := io.ReadAll(s.Stdin())
		if err != nil {
			return 2
		}
		pw, err := s.Prompt("password: ")
		if err != nil {
			return 3
		}
		if err := s.MkdirAll(filepath.Join(s.Request.Args[1], "sub"), 0o750); err != nil {
			return 4
		}
		if err := s.WriteFile(filepath.Join(s.Request.Args[1], "sub", "out.txt"), append(append(data, stdin...), pw...), 0o640); err != nil {
			return 5
		}
		if _, err := s.ReadFile(filepath.Join(s.Request.Args[1], "missing")); err == nil || !strings.Contains(err.Error(), "no such file") {
			return 6
		}
		fmt.Fprint(s.Stdout(), "done ", s.Request.Env["K_PASSWORD"])
		return 7
	})
	var stdout, stderr bytes.Buffer
	big := bytes.Repeat([]byte("s"), 1<<20+1) // more than one stdin message (1 MiB at most)
	code, err := call(t, path, admin.Request{Args: []string{in, dir}, Env: map[string]string{"K_PASSWORD": "pw"}},
		admin.Local{Stdin: bytes.NewReader(big), Stdout: &stdout, Stderr: &stderr,
			Prompt: func(q string) ([]byte, error) { return []byte("[" + q + "]"), nil },
			Allow:  func(string, string) error { return nil }})
	if err != nil || code != 7 || stdout.String() != "done pw" || stderr.Len() != 0 {
		t.Fatalf("code %d, err %v, stdout %q, stderr %q", code, err, stdout.String(), stderr.String())
	}
	got, err := os.ReadFile(filepath.Join(dir, "sub", "out.txt"))
	if err != nil || !bytes.Equal(got, append(append([]byte("file content"), big...), "[password: ]"...)) {
		t.Fatalf("written file: %d bytes, %v", len(got), err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "sub", "out.txt")); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v", fi.Mode().Perm())
	}
	if seen.Peer.UID != uint32(os.Getuid()) || seen.Peer.PID != int32(os.Getpid()) {
		t.Errorf("peer %+v", seen.Peer)
	}
	// An error in the caller's file system reaches the command as text.
	code, _ = call(t, path, admin.Request{Args: []string{filepath.Join(dir, "nope"), dir}}, admin.Local{Stdout: io.Discard, Stderr: &stderr,
		Allow: func(string, string) error { return nil }})
	if code != 1 || !strings.Contains(stderr.String(), "no such file or directory") {
		t.Fatalf("missing file: %d %q", code, stderr.String())
	}
}

func TestNoDaemon(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "admin.sock")
	if _, err := admin.Dial(context.Background(), path); !errors.Is(err, admin.ErrNoDaemon) {
		t.Fatalf("no socket: %v", err)
	}
	// A socket left behind by a daemon that died.
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	if _, err := admin.Dial(context.Background(), path); !errors.Is(err, admin.ErrNoDaemon) {
		t.Fatalf("stale socket: %v", err)
	}
	// Listen replaces it; a live one it refuses to replace.
	l2, err := admin.Listen(path, -1)
	if err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	defer l2.Close()
	if _, err := admin.Listen(path, -1); err == nil || !strings.Contains(err.Error(), "another daemon is listening") {
		t.Fatalf("over a live socket: %v", err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket mode: %v %v", fi.Mode(), err)
	}
	notSock := filepath.Join(t.TempDir(), "file")
	os.WriteFile(notSock, nil, 0o600)
	if _, err := admin.Listen(notSock, -1); err == nil || !strings.Contains(err.Error(), "is not a socket") {
		t.Fatalf("over a file: %v", err)
	}
}

// TestOtherUsersAreRefused runs a second process as another user (nobody,
// uid 65534): the socket's permissions keep it out, and where they do not
// (a socket made world-writable), the daemon's own check does.
func TestOtherUsersAreRefused(t *testing.T) {
	t.Parallel()
	if os.Getuid() != 0 {
		t.Fatal("this test starts a process as another user: run it as root (make test does in CI)")
	}
	base, err := os.MkdirTemp("", "admin-test")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(base)
	os.Chmod(base, 0o755)
	self, _ := os.Executable()
	bin := filepath.Join(base, "admin.test")
	data, _ := os.ReadFile(self)
	os.WriteFile(bin, data, 0o755)
	sockDir := filepath.Join(base, "run")
	os.Mkdir(sockDir, 0o755)
	path := filepath.Join(sockDir, "admin.sock")
	l, err := admin.Listen(path, -1)
	if err != nil {
		t.Fatal(err)
	}
	var ran atomic.Bool
	srv := admin.Serve(context.Background(), l, admin.RootOrGroup(-1), func(ctx context.Context, s *admin.Session) int {
		ran.Store(true)
		return 0
	}, slog.New(slog.DiscardHandler))
	defer srv.Close()
	asNobody := func() string {
		cmd := exec.Command(bin)
		cmd.Env = []string{"ADMIN_TEST_DIAL=" + path}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("child: %v %s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if out := asNobody(); !strings.HasPrefix(out, "dial: admin: permission denied: ") {
		t.Fatalf("mode 0660, another user: %q", out)
	}
	os.Chmod(path, 0o666)
	if out := asNobody(); !strings.HasPrefix(out, "call: 1 admin: permission denied: local user nobody (uid 65534)") ||
		!strings.Contains(out, "is neither root nor in the admin group") {
		t.Fatalf("world-writable socket, another user: %q", out)
	}
	if ran.Load() {
		t.Fatal("the command ran for a refused caller")
	}
	// A member of the admin group is let in (nobody's own group here).
	l2, err := admin.Listen(filepath.Join(sockDir, "group.sock"), 65534)
	if err != nil {
		t.Fatal(err)
	}
	srv2 := admin.Serve(context.Background(), l2, admin.RootOrGroup(65534), func(ctx context.Context, s *admin.Session) int {
		fmt.Fprint(s.Stdout(), "hello ", s.Peer.UID)
		return 3
	}, slog.New(slog.DiscardHandler))
	defer srv2.Close()
	if fi, err := os.Stat(filepath.Join(sockDir, "group.sock")); err != nil || fi.Sys().(*syscall.Stat_t).Gid != 65534 || fi.Mode().Perm() != 0o660 {
		t.Fatalf("group socket: %v %v", fi.Mode(), err)
	}
	path = filepath.Join(sockDir, "group.sock")
	if out := asNobody(); out != "hello 65534call: 3 <nil>" {
		t.Fatalf("a member of the admin group: %q", out)
	}
	path = filepath.Join(sockDir, "admin.sock")
	// The same user (root here) is let in.
	if code, err := call(t, path, admin.Request{Args: []string{"x"}}, admin.Local{Stdout: io.Discard, Stderr: io.Discard}); code != 0 || err != nil || !ran.Load() {
		t.Fatalf("root: %d %v", code, err)
	}
}

// TestTheCallerDecides: the daemon may touch only what the caller allows,
// and prompt only when the caller lets it.
func TestTheCallerDecides(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	named := filepath.Join(dir, "named.txt")
	os.WriteFile(named, []byte("ok"), 0o600)
	var errs []string
	path := serve(t, admin.RootOrGroup(-1), func(ctx context.Context, s *admin.Session) int {
		errs = nil
		for _, err := range []error{
			func() error { _, err := s.ReadFile(named); return err }(),
			func() error { _, err := s.ReadFile("/etc/shadow"); return err }(),
			s.WriteFile(filepath.Join(dir, "authorized_keys"), []byte("x"), 0o644),
			s.MkdirAll(filepath.Join(dir, "sub"), 0o755),
			func() error { _, err := s.Prompt("password: "); return err }(),
		} {
			errs = append(errs, fmt.Sprint(err))
		}
		return 0
	})
	allow := func(op, p string) error {
		if op == "read" && p == named {
			return nil
		}
		return fmt.Errorf("%s %s: not named on the command line", op, p)
	}
	if code, err := call(t, path, admin.Request{Args: []string{"x"}}, admin.Local{Stdout: io.Discard, Stderr: io.Discard, Allow: allow}); code != 0 || err != nil {
		t.Fatal(code, err)
	}
	want := []string{"<nil>", "read /etc/shadow: not named on the command line", "write " + filepath.Join(dir, "authorized_keys") + ": not named on the command line",
		"mkdir " + filepath.Join(dir, "sub") + ": not named on the command line", "this command asks for no password"}
	if strings.Join(errs, "|") != strings.Join(want, "|") {
		t.Fatalf("got  %q\nwant %q", errs, want)
	}
	if _, err := os.Stat(filepath.Join(dir, "authorized_keys")); err == nil {
		t.Fatal("a file was written")
	}
	// Nothing allowed at all without an Allow.
	call(t, path, admin.Request{Args: []string{"x"}}, admin.Local{Stdout: io.Discard, Stderr: io.Discard})
	if errs[0] != "read "+named+": this command touches no files" {
		t.Fatalf("without Allow: %q", errs[0])
	}
}

// TestStopEndsCalls: a call waiting on its caller ends when the daemon
// stops, and a caller that goes away ends its call; the next one runs.
func TestStopEndsCalls(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "admin.sock")
	l, err := admin.Listen(path, -1)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{}, 4)
	results := make(chan error, 4)
	srv := admin.Serve(ctx, l, admin.RootOrGroup(-1), func(ctx context.Context, s *admin.Session) int {
		started <- struct{}{}
		_, err := io.ReadAll(s.Stdin()) // waits on the caller
		results <- err
		return 0
	}, slog.New(slog.DiscardHandler))
	// A caller that goes away.
	c, err := admin.Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	go admin.Call(c, admin.Request{Args: []string{"x"}}, admin.Local{Stdin: pr, Stdout: io.Discard, Stderr: io.Discard})
	<-started
	c.Close()
	if err := <-results; err == nil {
		t.Fatal("the command did not notice its caller left")
	}
	pw.Close()
	// A caller that waits forever, asked for its input, and the daemon
	// stopping.
	c, _ = admin.Dial(context.Background(), path)
	stdin := newAskedReader()
	defer close(stdin.release)
	go admin.Call(c, admin.Request{Args: []string{"x"}}, admin.Local{Stdin: stdin, Stdout: io.Discard, Stderr: io.Discard})
	<-stdin.asked
	cancel()
	wantEnded(t, results, srv)
}

// wantEnded checks that the call in progress ended with an error within
// 5 s of the stop, and that Close does not wait for it.
func wantEnded(t *testing.T, results <-chan error, srv *admin.Server) {
	t.Helper()
	select {
	case err := <-results:
		if err == nil {
			t.Fatal("the command read to the end")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("stopping did not end the call")
	}
	closed := make(chan struct{})
	go func() { srv.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close waited for a call that should have ended")
	}
}

// askedReader is a caller's input that never ends: it tells when it is
// first read, then blocks until release is closed.
type askedReader struct {
	once           sync.Once
	asked, release chan struct{}
}

func newAskedReader() *askedReader {
	return &askedReader{asked: make(chan struct{}), release: make(chan struct{})}
}

func (r *askedReader) Read([]byte) (int, error) {
	r.once.Do(func() { close(r.asked) })
	<-r.release
	return 0, io.EOF
}

// TestPanicFailsTheCommandOnly: a command that panics fails, the daemon
// goes on.
func TestPanicFailsTheCommandOnly(t *testing.T) {
	t.Parallel()
	path := serve(t, admin.RootOrGroup(-1), func(ctx context.Context, s *admin.Session) int {
		if s.Request.Args[0] == "boom" {
			panic("boom")
		}
		return 4
	})
	var stderr bytes.Buffer
	if code, err := call(t, path, admin.Request{Args: []string{"boom"}}, admin.Local{Stdout: io.Discard, Stderr: &stderr}); code != 1 || err != nil ||
		!strings.Contains(stderr.String(), "internal error") {
		t.Fatalf("panic: %d %v %q", code, err, stderr.String())
	}
	if code, _ := call(t, path, admin.Request{Args: []string{"next"}}, admin.Local{Stdout: io.Discard, Stderr: io.Discard}); code != 4 {
		t.Fatalf("after a panic: %d", code)
	}
}

// TestSocketDirectory: no socket in, or through, a directory others can
// write to.
func TestSocketDirectory(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	os.Chmod(dir, 0o777)
	if _, err := admin.Listen(filepath.Join(dir, "admin.sock"), -1); err == nil || !strings.Contains(err.Error(), "is writable by others than its owner") {
		t.Fatalf("listen: %v", err)
	}
	os.Chmod(dir, 0o755)
	l, err := admin.Listen(filepath.Join(dir, "admin.sock"), -1)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	os.Chmod(dir, 0o777)
	if _, err := admin.Dial(context.Background(), filepath.Join(dir, "admin.sock")); err == nil || !strings.Contains(err.Error(), "is writable by others than its owner") {
		t.Fatalf("dial: %v", err)
	}
}
