package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/brokerd/brokerd/admin"
	"github.com/brokerd/brokerd/config"
	"github.com/brokerd/brokerd/keys"
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

// parse parses args, turning flag errors into usage errors, refusing
// stray arguments and checking that the string flags named required are
// set.
func (e *env) parse(fs *flag.FlagSet, args []string, required ...string) error {
	_, err := e.parseArgs(fs, args, 0, required...)
	return err
}

// parseArgs parses args that end in exactly n operands, and returns them.
// While probing it returns errProbed once they parse.
func (e *env) parseArgs(fs *flag.FlagSet, args []string, n int, required ...string) ([]string, error) {
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
		return nil, usageError{flagError(err)}
	}
	switch {
	case fs.NArg() != n && n == 0:
		return nil, usagef("unexpected argument %q", fs.Arg(0))
	case fs.NArg() != n && n == 1:
		return nil, usagef("want one argument after the flags, got %d", fs.NArg())
	case fs.NArg() != n:
		return nil, usagef("want %d arguments after the flags, got %d", n, fs.NArg())
	}
	for _, name := range required {
		if fs.Lookup(name).Value.String() == "" {
			return nil, usagef("--%s is required", name)
		}
	}
	if e.probe {
		return nil, errProbed
	}
	return fs.Args(), nil
}

// flagError words a flag package error in the command line's terms.
func flagError(err error) string {
	if f, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: -"); ok {
		return "unknown flag --" + f
	}
	return err.Error()
}

// multiFlag collects a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// path defines a flag naming a file of the caller's that the command
// reads (admin.Read), writes (admin.Write) or creates files in (admin.Dir).
func (e *env) path(fs *flag.FlagSet, name string, access admin.Access, usage string) *string {
	v := new(string)
	fs.Var(admin.PathFlag{Value: v, Access: access, Grants: &e.grants}, name, usage)
	return v
}

// purpose defines --purpose on fs.
func purpose(fs *flag.FlagSet) *keys.Purpose {
	p := new(keys.Purpose)
	fs.Var(p, "purpose", "what the key is for: `qwac`, qseal or any (default: what its certificate says; any without one)")
	return p
}
