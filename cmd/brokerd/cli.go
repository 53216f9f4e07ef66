package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"sort"
	"strings"

	"github.com/brokerd/brokerd/admin"
	"github.com/brokerd/brokerd/config"
	"github.com/brokerd/brokerd/daemon"
	"github.com/brokerd/brokerd/tpm"
)

// env is what a command may touch: the process's streams, environment
// and files, or, when the command runs inside the daemon for a caller of
// the admin socket, the caller's.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	configFlag     string // global --config, before the command name

	// Inside the daemon: the caller's files and terminal, who the caller
	// is, and the daemon. Nil outside.
	files  admin.FS
	prompt func(question string) ([]byte, error)
	caller string
	daemon *daemon.Daemon

	// state is the state a command opened (openState); run closes it.
	state *daemon.State

	// grants collects the caller's files that the command's flags name
	// (pathFlag), as they are parsed: all that the daemon may touch.
	grants []admin.Grant
	// probe: parse the flags only (parse returns errProbed).
	probe bool
}

// command is one subcommand. viaDaemon says whether, for these arguments,
// the command must run inside a running daemon (it needs the TPM or the
// state file, which the daemon owns); nil: never.
type command struct {
	summary   string
	run       func(ctx context.Context, e *env, args []string) error
	viaDaemon func(args []string) bool
}

// always is the viaDaemon of commands that always need the daemon's state.
func always([]string) bool { return true }

// unlessDB: commands given --db work on a copy of the state, not the
// daemon's.
func unlessDB(args []string) bool {
	for _, a := range args {
		if a == "--db" || a == "-db" || strings.HasPrefix(a, "--db=") || strings.HasPrefix(a, "-db=") {
			return false
		}
	}
	return true
}

// commandTable lists the subcommands by name.
func commandTable() map[string]command {
	table := map[string]command{
		"init":          {"write the configuration and state directory, bind them to the TPM", cmdInit, nil},
		"config check":  {"validate the configuration and the state, naming every problem", cmdConfigCheck, always},
		"key create":    {"generate a key inside the TPM and print its CSR", cmdKeyCreate, always},
		"key import":    {"import a PEM key (or a wrapped blob) into the TPM", cmdKeyImport, always},
		"key wrap":      {"encrypt a key for another machine's TPM (needs no TPM)", cmdKeyWrap, nil},
		"key cert":      {"attach the certificate the QTSP issued", cmdKeyCert, always},
		"key list":      {"list keys: id, aliases, kind, algorithm, certificate", cmdKeyList, always},
		"key sign":      {"sign standard input, print base64", cmdKeySign, always},
		"key delete":    {"delete a key", cmdKeyDelete, always},
		"key origins":   {"bind a QWAC to the bank origins it may be used for", cmdKeyOrigins, always},
		"key config":    {"set a key's JWS defaults: kid, Open Banking iss and tan", cmdKeyConfig, always},
		"client sign":   {"certify a client's CSR with brokerd's CA", cmdClientSign, always},
		"client issue":  {"make a client key and certificate here (quick LAN set-up)", cmdClientIssue, always},
		"client list":   {"list the client certificates brokerd's CA issued", cmdClientList, always},
		"client revoke": {"revoke a client certificate, at once", cmdClientRevoke, always},
		"trust add":     {"trust a CA for banks' server certificates", cmdTrustAdd, always},
		"trust list":    {"list the CAs added for banks", cmdTrustList, nil},
		"trust remove":  {"stop trusting a CA added for banks", cmdTrustRemove, always},
		"tpm ek":        {"print this TPM's endorsement public key (and its certificate)", cmdTPMEK, always},
		"tpm info":      {"describe the TPM: chip, firmware, algorithms, lockout, rates, known flaws", cmdTPMInfo, always},
		"tls renew":     {"issue the server certificate again now (brokerd's CA)", cmdTLSRenew, always},
		"serve":         {"run the daemon: the mutual-TLS API", cmdServe, nil},
		"policy allow":  {"add or replace an access rule", cmdPolicyAllow, always},
		"policy list":   {"list the access rules", cmdPolicyList, nil},
		"policy remove": {"remove an access rule", cmdPolicyRemove, always},
		"policy test":   {"show the decision for a client certificate", cmdPolicyTest, always},
		"audit pubkey":  {"print the audit log's public key", cmdAuditPubkey, always},
		"audit verify":  {"verify the audit log (offline, on a copy)", cmdAuditVerify, unlessDB},
		"audit export":  {"print audit records as JSON lines", cmdAuditExport, unlessDB},
		"version":       {"print the version", cmdVersion, nil},
	}
	maps.Copy(table, demoCommands())
	return table
}

// usageError is a command-line mistake: exit status 2.
type usageError struct{ msg string }

func (u usageError) Error() string { return u.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// run executes one command line and returns the exit status.
func run(ctx context.Context, args []string, e *env) int {
	global := flag.NewFlagSet("brokerd", flag.ContinueOnError)
	global.SetOutput(io.Discard)
	global.StringVar(&e.configFlag, "config", "", "")
	help := global.Bool("help", false, "")
	global.BoolVar(help, "h", false, "")
	showVersion := global.Bool("version", false, "")
	if err := global.Parse(args); err != nil {
		fmt.Fprintf(e.stderr, "brokerd: %s (see brokerd --help)\n", flagError(err))
		return 2
	}
	args = global.Args()
	switch {
	case *showVersion:
		return exitCode(e, "version", cmdVersion(ctx, e, nil))
	case *help || len(args) == 0 || args[0] == "help":
		printUsage(e.stdout, "")
		return 0
	}
	name, cmd, rest, code := lookup(e, args)
	if cmd == nil {
		return code
	}
	switch {
	case e.daemon != nil && (cmd.viaDaemon == nil || !cmd.viaDaemon(rest)):
		fmt.Fprintf(e.stderr, "brokerd %s: not a command of the admin socket (with these arguments)\n", name)
		return 2
	case e.daemon == nil && cmd.viaDaemon != nil && cmd.viaDaemon(rest):
		if code, done := e.callDaemon(ctx, name, *cmd, rest); done {
			return code
		}
	}
	err := cmd.run(ctx, e, rest)
	if e.state != nil {
		e.state.Close()
	}
	return exitCode(e, name, err)
}

// lookup finds the command args name; cmd is nil when there is none, and
// code is then the exit status (usage printed).
func lookup(e *env, args []string) (name string, cmd *command, rest []string, code int) {
	commands := commandTable()
	name, rest = args[0], args[1:]
	if _, ok := commands[name]; !ok && len(rest) > 0 {
		name, rest = args[0]+" "+args[1], args[2:]
	}
	if c, ok := commands[name]; ok {
		return name, &c, rest, 0
	}
	if isGroup(commands, args[0]) && (len(args) == 1 || isHelp(args[1])) {
		// "brokerd key" or "brokerd key --help": the group's commands.
		if len(args) == 1 {
			fmt.Fprintf(e.stderr, "brokerd %s: a subcommand is missing\n\n", args[0])
			printUsage(e.stderr, args[0])
			return "", nil, nil, 2
		}
		printUsage(e.stdout, args[0])
		return "", nil, nil, 0
	}
	fmt.Fprintf(e.stderr, "brokerd: unknown command %q (see brokerd --help)\n", strings.Join(args[:min(2, len(args))], " "))
	return "", nil, nil, 2
}

// exitCode prints a command's error and returns its exit status: 2 for a
// usage error, 1 for any other.
func exitCode(e *env, name string, err error) int {
	var ue usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(e.stderr, "brokerd %s: %s (see brokerd %s --help)\n", name, ue.msg, name)
		return 2
	}
	fmt.Fprintf(e.stderr, "brokerd %s: %v\n", name, err)
	return 1
}

// isGroup reports whether word starts multi-word commands ("key", "audit").
func isGroup(commands map[string]command, word string) bool {
	for n := range commands {
		if strings.HasPrefix(n, word+" ") {
			return true
		}
	}
	return false
}

func isHelp(arg string) bool {
	return arg == "--help" || arg == "-help" || arg == "-h" || arg == "help"
}

// printUsage lists the commands, or only those of group when it is set.
func printUsage(w io.Writer, group string) {
	if group == "" {
		fmt.Fprint(w, `brokerd: eIDAS keys in a TPM, used by LAN clients over mutual TLS.

Usage: brokerd [--config FILE] COMMAND [flags]

Commands:
`)
	} else {
		fmt.Fprintf(w, "Usage: brokerd [--config FILE] %s COMMAND [flags]\n\nCommands:\n", group)
	}
	commands := commandTable()
	var names []string
	for n := range commands {
		if group == "" || strings.HasPrefix(n, group+" ") {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-14s %s\n", n, commands[n].summary)
	}
	fmt.Fprintf(w, `
Every command takes --help. The configuration is --config FILE, else $%s,
else %s.
`, config.EnvPath, config.DefaultPath)
}

func (e *env) loadConfig() (*config.Config, error) {
	if e.daemon != nil {
		return e.daemon.Config(), nil
	}
	return config.Load(config.Path(e.configFlag, e.getenv))
}

func (e *env) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// openState opens the TPM and the state file, or lends the daemon's,
// once per command: run closes it after the command.
func (e *env) openState() (*daemon.State, error) {
	if e.state != nil {
		return e.state, nil
	}
	if e.daemon != nil {
		e.state = e.daemon.State()
		return e.state, nil
	}
	cfg, err := e.loadConfig()
	if err != nil {
		return nil, err
	}
	e.state, err = daemon.OpenState(cfg, e.logger())
	return e.state, err
}

// actor names who runs the command, for the audit log.
func (e *env) actor() string { return cmp.Or(e.caller, admin.Self()) }

// writeJSON prints v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func cmdVersion(_ context.Context, e *env, args []string) error {
	fs := e.flags("version", "", "Print the version.")
	if err := e.parse(fs, args); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "brokerd %s (simulator: %v)\n", version, tpm.SimulatorAvailable)
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
