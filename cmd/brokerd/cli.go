package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"sort"
	"strings"

	"github.com/brokerd/brokerd/config"
	"github.com/brokerd/brokerd/keys"
	"github.com/brokerd/brokerd/store"
	"github.com/brokerd/brokerd/tpm"
)

// env is what a command may touch of the process.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	configFlag     string // global --config, before the command name
}

// command is one subcommand.
type command struct {
	summary string
	run     func(ctx context.Context, e *env, args []string) error
}

// commandTable lists the subcommands by name.
func commandTable() map[string]command {
	table := map[string]command{
		"init":          {"write the configuration and state directory, bind them to the TPM", cmdInit},
		"config check":  {"validate the configuration and the state, naming every problem", cmdConfigCheck},
		"key create":    {"generate a key inside the TPM and print its CSR", cmdKeyCreate},
		"key import":    {"import a PEM key (or a wrapped blob) into the TPM", cmdKeyImport},
		"key wrap":      {"encrypt a key for another machine's TPM (needs no TPM)", cmdKeyWrap},
		"key cert":      {"attach the certificate the QTSP issued", cmdKeyCert},
		"key list":      {"list keys: id, aliases, kind, algorithm, certificate", cmdKeyList},
		"key sign":      {"sign standard input, print base64", cmdKeySign},
		"key delete":    {"delete a key", cmdKeyDelete},
		"key origins":   {"bind a QWAC to the bank origins it may be used for", cmdKeyOrigins},
		"trust add":     {"trust a CA for banks' server certificates", cmdTrustAdd},
		"trust list":    {"list the CAs added for banks", cmdTrustList},
		"trust remove":  {"stop trusting a CA added for banks", cmdTrustRemove},
		"tpm ek":        {"print this TPM's endorsement public key", cmdTPMEK},
		"serve":         {"run the daemon: the mutual-TLS API", cmdServe},
		"policy allow":  {"add or replace an access rule", cmdPolicyAllow},
		"policy list":   {"list the access rules", cmdPolicyList},
		"policy remove": {"remove an access rule", cmdPolicyRemove},
		"policy test":   {"show the decision for a client certificate", cmdPolicyTest},
		"audit pubkey":  {"print the audit log's public key", cmdAuditPubkey},
		"audit verify":  {"verify the audit log (offline, on a copy)", cmdAuditVerify},
		"audit export":  {"print audit records as JSON lines", cmdAuditExport},
		"version":       {"print the version", cmdVersion},
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
	if err := global.Parse(args); err != nil {
		fmt.Fprintf(e.stderr, "brokerd: %v\n", err)
		return 2
	}
	args = global.Args()
	if *help || len(args) == 0 || args[0] == "help" {
		printUsage(e.stdout, "")
		return 0
	}
	commands := commandTable()
	name, rest := args[0], args[1:]
	if _, ok := commands[name]; !ok && len(rest) > 0 {
		name, rest = args[0]+" "+args[1], args[2:]
	}
	cmd, ok := commands[name]
	if !ok && isGroup(commands, args[0]) && (len(args) == 1 || isHelp(args[1])) {
		// "brokerd key" or "brokerd key --help": the group's commands.
		if len(args) == 1 {
			fmt.Fprintf(e.stderr, "brokerd %s: a subcommand is missing\n\n", args[0])
			printUsage(e.stderr, args[0])
			return 2
		}
		printUsage(e.stdout, args[0])
		return 0
	}
	if !ok {
		fmt.Fprintf(e.stderr, "brokerd: unknown command %q (see brokerd --help)\n", strings.Join(args[:min(2, len(args))], " "))
		return 2
	}
	err := cmd.run(ctx, e, rest)
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(e.stderr, "brokerd %s: %s (see brokerd %s --help)\n", name, ue.msg, name)
		return 2
	}
	fmt.Fprintf(e.stderr, "brokerd %s: %s\n", name, oneLine(err))
	return 1
}

// oneLine joins a multi-line error (errors.Join) with "; ".
func oneLine(err error) string {
	return strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
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

// flags returns a FlagSet for command name that also accepts --config.
func (e *env) flags(name, args, about string) *flag.FlagSet {
	fs := flag.NewFlagSet("brokerd "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.StringVar(&e.configFlag, "config", e.configFlag, "configuration `file` (default $"+config.EnvPath+" or "+config.DefaultPath+")")
	fs.Usage = func() {
		fmt.Fprintf(e.stdout, "Usage: brokerd %s %s\n\n%s\n\nFlags:\n", name, args, about)
		fs.VisitAll(func(f *flag.Flag) {
			arg, usage := flag.UnquoteUsage(f)
			fmt.Fprintf(e.stdout, "  --%s %s\n    \t%s", f.Name, arg, usage)
			if f.DefValue != "" && f.DefValue != "false" {
				fmt.Fprintf(e.stdout, " (default %s)", f.DefValue)
			}
			fmt.Fprintln(e.stdout)
		})
	}
	return fs
}

// parse parses args, turning flag errors into usage errors and refusing
// stray arguments.
func parse(fs *flag.FlagSet, args []string) error {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

// required checks that the named string flags are set.
func required(fs *flag.FlagSet, names ...string) error {
	for _, n := range names {
		if fs.Lookup(n).Value.String() == "" {
			return usagef("--%s is required", n)
		}
	}
	return nil
}

// multiFlag collects a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func (e *env) loadConfig() (*config.Config, error) {
	return config.Load(config.Path(e.configFlag, e.getenv))
}

func (e *env) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// state is the TPM, the state file and the key registry, opened directly
// (the daemon is not running).
type state struct {
	cfg  *config.Config
	dev  *tpm.Device
	st   *store.Store
	keys *keys.Manager
}

func (e *env) openState() (*state, error) {
	cfg, err := e.loadConfig()
	if err != nil {
		return nil, err
	}
	return openState(cfg, e.logger())
}

func openState(cfg *config.Config, log *slog.Logger) (*state, error) {
	st, err := store.Open(statePath(cfg), store.Options{})
	if err != nil {
		return nil, err
	}
	dev, err := tpm.Open(cfg.TPMConfig(), log)
	if err != nil {
		st.Close()
		return nil, err
	}
	m, err := keys.Open(dev, st, keys.Options{SealPCRs: cfg.TPM.SealPCRs, Log: log})
	if err != nil {
		dev.Close()
		st.Close()
		return nil, err
	}
	return &state{cfg: cfg, dev: dev, st: st, keys: m}, nil
}

func (s *state) Close() {
	s.dev.Close()
	s.st.Close()
}

func statePath(cfg *config.Config) string {
	return cfg.StateDir + string(os.PathSeparator) + store.FileName
}

// writeJSON prints v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func cmdVersion(_ context.Context, e *env, args []string) error {
	fs := e.flags("version", "", "Print the version.")
	if err := parse(fs, args); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "brokerd %s (simulator: %v)\n", version, tpm.SimulatorAvailable)
	return nil
}
