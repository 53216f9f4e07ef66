package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strings"

	"golang.org/x/term"

	"github.com/brokerd/brokerd/admin"
	"github.com/brokerd/brokerd/internal/certs"
	"github.com/brokerd/brokerd/internal/files"
	"github.com/brokerd/brokerd/keys"
)

// fileSystem is where a command's files are: this process's, or the
// caller's when the command runs inside the daemon (admin.Session).
type fileSystem interface {
	ReadFile(path string) ([]byte, error)
	// WriteFile writes a file, not through a symbolic link; an existing
	// file gets mode perm. CreateFile writes a file that must not exist
	// (private keys).
	WriteFile(path string, data []byte, perm os.FileMode) error
	CreateFile(path string, data []byte, perm os.FileMode) error
	MkdirAll(path string, perm os.FileMode) error
}

type localFS struct{}

func (localFS) ReadFile(path string) ([]byte, error) { return os.ReadFile(path) }
func (localFS) WriteFile(path string, data []byte, perm os.FileMode) error {
	return files.Write(path, data, perm, false)
}
func (localFS) CreateFile(path string, data []byte, perm os.FileMode) error {
	return files.Write(path, data, perm, true)
}
func (localFS) MkdirAll(path string, perm os.FileMode) error { return os.MkdirAll(path, perm) }

func (e *env) fs() fileSystem {
	if e.files != nil {
		return e.files
	}
	return localFS{}
}

func (e *env) readFile(path string) ([]byte, error) { return e.fs().ReadFile(path) }

func (e *env) writeFile(path string, data []byte, perm os.FileMode) error {
	return e.fs().WriteFile(path, data, perm)
}

func (e *env) createFile(path string, data []byte, perm os.FileMode) error {
	return e.fs().CreateFile(path, data, perm)
}

func (e *env) mkdirAll(path string, perm os.FileMode) error { return e.fs().MkdirAll(path, perm) }

// readCerts reads a PEM certificate file.
func (e *env) readCerts(path string) ([]*x509.Certificate, error) {
	data, err := e.readFile(path)
	if err != nil {
		return nil, err
	}
	cs, err := certs.ParsePEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cs, nil
}

// askPassword asks the user on their terminal; ok is false when there is
// no terminal to ask on.
func (e *env) askPassword(question string) (pw []byte, ok bool, err error) {
	if e.prompt != nil {
		pw, err = e.prompt(question)
		return pw, err == nil, err
	}
	f, isFile := e.stdin.(*os.File)
	if !isFile || !term.IsTerminal(int(f.Fd())) {
		return nil, false, nil
	}
	fmt.Fprint(e.stderr, question)
	pw, err = term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(e.stderr)
	return pw, true, err
}

// localUser names the user running this process, for the audit log.
func localUser() string {
	if u, err := user.Current(); err == nil {
		return fmt.Sprintf("local user %s (uid %s)", u.Username, u.Uid)
	}
	return fmt.Sprintf("local user uid %d", os.Getuid())
}

// callDaemon runs the command inside the running daemon, through its
// admin socket. done is false when no daemon runs: the command then runs
// here, on the TPM and the state file directly.
func (e *env) callDaemon(ctx context.Context, name string, args []string) (code int, done bool) {
	cfg, err := e.loadConfig()
	if err != nil {
		return 0, false // the command reports it
	}
	c, err := admin.Dial(ctx, cfg.Admin.Socket)
	if errors.Is(err, admin.ErrNoDaemon) {
		return 0, false
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "brokerd %s: the daemon is running and %v\n", name, err)
		return 1, true
	}
	req := admin.Request{Args: append(strings.Fields(name), args...), Env: map[string]string{}}
	named := namedPaths(args)
	// Only the password variables of the files the command line names
	// (qwac.key → QWAC_KEY_PASSWORD) travel.
	for p := range named {
		if k := keys.PasswordEnv(p); e.getenv(k) != "" {
			req.Env[k] = e.getenv(k)
		}
	}
	local := admin.Local{Stdin: e.stdin, Stdout: e.stdout, Stderr: e.stderr, Allow: allowNamed(name, args, named)}
	if f, ok := e.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) && name == "key import" {
		local.Prompt = func(q string) ([]byte, error) {
			pw, _, err := e.askPassword(q)
			return pw, err
		}
	}
	code, err = admin.Call(c, req, local)
	if err != nil {
		fmt.Fprintf(e.stderr, "brokerd %s: %v\n", name, err)
		return max(code, 1), true
	}
	return code, true
}

// namedPaths are the arguments of a command line, and the values of its
// --flag=value arguments, as cleaned paths.
func namedPaths(args []string) map[string]bool {
	named := map[string]bool{}
	for _, a := range args {
		if strings.HasPrefix(a, "-") {
			if _, v, ok := strings.Cut(a, "="); ok {
				a = v
			}
		}
		if a != "" {
			named[filepath.Clean(a)] = true
		}
	}
	return named
}

// allowNamed lets the daemon touch, of the caller's files, only those the
// command line names, and for client issue the files it writes into the
// --out directory. The daemon is trusted with the TPM, not with the
// caller's account.
func allowNamed(name string, args []string, named map[string]bool) func(op, path string) error {
	outDir := ""
	if name == "client issue" {
		for i, a := range args {
			switch {
			case (a == "--out" || a == "-out") && i+1 < len(args):
				outDir = filepath.Clean(args[i+1])
			case strings.HasPrefix(a, "--out="), strings.HasPrefix(a, "-out="):
				_, v, _ := strings.Cut(a, "=")
				outDir = filepath.Clean(v)
			}
		}
	}
	return func(op, path string) error {
		p := filepath.Clean(path)
		if named[p] || (op == "write" && outDir != "" && filepath.Dir(p) == outDir) {
			return nil
		}
		return fmt.Errorf("the daemon asked to %s %s, which the command line does not name: refused", op, path)
	}
}

// adminHandler runs the commands that come through the admin socket, on
// the daemon's state, with the caller's files and streams.
func adminHandler(d *daemonState) admin.Handler {
	return func(ctx context.Context, s *admin.Session) int {
		e := &env{stdin: s.Stdin(), stdout: s.Stdout(), stderr: s.Stderr(),
			getenv: func(k string) string { return s.Request.Env[k] },
			files:  s, prompt: s.Prompt, caller: s.Peer.String(), daemon: d}
		return run(ctx, s.Request.Args, e)
	}
}
