package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/brokerd/brokerd/admin"
	"github.com/brokerd/brokerd/config"
)

// errProbed ends a command whose flags were only parsed (env.probe).
var errProbed = errors.New("flags parsed")

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
func (e *env) parse(fs *flag.FlagSet, args []string) error {
	_, err := e.parseArgs(fs, args, 0)
	return err
}

// parseArgs parses args that end in exactly n operands, and returns them.
// While probing it returns errProbed once they parse.
func (e *env) parseArgs(fs *flag.FlagSet, args []string, n int) ([]string, error) {
	fs.SetOutput(io.Discard)
	usage := fs.Usage
	fs.Usage = func() {} // a mistake gets one line, not the whole usage
	err := fs.Parse(args)
	fs.Usage = usage
	if errors.Is(err, flag.ErrHelp) {
		usage()
		return nil, err
	}
	if err != nil {
		msg := err.Error()
		if f, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
			msg = "unknown flag --" + f
		}
		return nil, usageError{msg}
	}
	switch {
	case fs.NArg() != n && n == 0:
		return nil, usagef("unexpected argument %q", fs.Arg(0))
	case fs.NArg() != n:
		return nil, usagef("want %d argument(s) after the flags, got %d", n, fs.NArg())
	case e.probe:
		return nil, errProbed
	}
	return fs.Args(), nil
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

// pathFlag is a flag naming one of the caller's files: when the command
// runs inside the daemon, the parsed path flags are the only files of the
// caller's that the daemon may touch, with the access the flag declares.
type pathFlag struct {
	value  *string
	access admin.Access
	e      *env
}

func (p pathFlag) String() string {
	if p.value == nil {
		return ""
	}
	return *p.value
}

func (p pathFlag) Set(v string) error {
	*p.value = v
	if v != "" {
		p.e.grants = append(p.e.grants, admin.Grant{Path: filepath.Clean(v), Access: p.access})
	}
	return nil
}

// path defines a flag naming a file of the caller's that the command
// reads (admin.Read), writes (admin.Write) or creates files in (admin.Dir).
func (e *env) path(fs *flag.FlagSet, name string, access admin.Access, usage string) *string {
	v := new(string)
	fs.Var(pathFlag{value: v, access: access, e: e}, name, usage)
	return v
}
