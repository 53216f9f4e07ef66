package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/term"

	"github.com/brokerd/brokerd/internal/keyfile"

	"github.com/brokerd/brokerd/admin"
	"github.com/brokerd/brokerd/daemon"
	"github.com/brokerd/brokerd/keys"
)

func (e *env) fs() admin.FS {
	if e.files != nil {
		return e.files
	}
	return admin.LocalFS{}
}

// readAs reads the caller's file path and parses it; a parse error names
// the file. What parse returns may keep data (x509's Raw fields do).
func readAs[T any](e *env, path string, parse func([]byte) (T, error)) (T, error) {
	var v T
	data, err := e.fs().ReadFile(path)
	if err != nil {
		return v, err
	}
	if v, err = parse(data); err != nil {
		return v, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}

// keyFiles reads the operator's key files: theirs, with their terminal,
// also inside the daemon.
func (e *env) keyFiles() keyfile.Reader {
	return keyfile.Reader{ReadFile: e.fs().ReadFile, Getenv: e.getenv, Prompt: e.prompt, Stdin: e.stdin, Stderr: e.stderr}
}

// callDaemon runs the command inside the running daemon, through its
// admin socket. done is false when no daemon runs (or the command line
// does not parse): the command then runs here.
func (e *env) callDaemon(ctx context.Context, name string, cmd command, args []string) (code int, done bool) {
	grants, ok := e.probeFlags(ctx, cmd, args)
	if !ok {
		return 0, false // the command reports its usage error, or its help
	}
	cfg, err := e.loadConfig()
	if err != nil {
		return 0, false // the command reports it
	}
	req := admin.Request{Args: append(strings.Fields(name), args...), Env: map[string]string{}}
	// Only the password variables of the files the command line reads
	// (qwac.key → QWAC_KEY_PASSWORD) travel.
	for _, g := range grants {
		if k := keys.PasswordEnv(g.Path); g.Access == admin.Read && e.getenv(k) != "" {
			req.Env[k] = e.getenv(k)
		}
	}
	local := admin.Local{Stdin: e.stdin, Stdout: e.stdout, Stderr: e.stderr, Allow: admin.Allow(grants)}
	if f, ok := e.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) && name == "key import" {
		local.Prompt = func(q string) ([]byte, error) {
			pw, _, err := e.keyFiles().Ask(q)
			return pw, err
		}
	}
	code, err = admin.Exec(ctx, cfg.Admin.Socket, req, local)
	switch {
	case errors.Is(err, admin.ErrNoDaemon):
		return 0, false
	case err != nil:
		fmt.Fprintf(e.stderr, "brokerd %s: %v\n", name, err)
		return max(code, 1), true
	}
	return code, true
}

// probeFlags parses the command line as the command would, without
// running it, and returns the caller's files its flags name; ok is false
// when it does not parse (or asks for help).
func (e *env) probeFlags(ctx context.Context, cmd command, args []string) ([]admin.Grant, bool) {
	p := &env{stdin: e.stdin, stdout: io.Discard, stderr: io.Discard, getenv: e.getenv, configFlag: e.configFlag, probe: true}
	if err := cmd.run(ctx, p, args); !errors.Is(err, errProbed) {
		return nil, false
	}
	e.configFlag = p.configFlag // --config may follow the command name
	return p.grants, true
}

// adminHandler runs the commands that come through the admin socket, on
// the daemon's state, with the caller's files and streams.
func adminHandler(d *daemon.Daemon) admin.Handler {
	return func(ctx context.Context, s *admin.Session) int {
		e := &env{stdin: s.Stdin(), stdout: s.Stdout(), stderr: s.Stderr(),
			getenv: func(k string) string { return s.Request.Env[k] },
			files:  s, prompt: s.Prompt, caller: s.Peer.String(), daemon: d}
		return run(ctx, s.Request.Args, e)
	}
}
