// Command gendoc writes brokerd's manual page and bash completion from the
// built binary itself: `brokerd --help` lists the commands, and each
// command's --help gives its usage line, description and flags. What the
// package ships therefore cannot drift from the command table.
//
//	gendoc -brokerd bin/brokerd -version 1.2.3 -date 2026-11-30 \
//	    -man brokerd.8 -completion brokerd.bash-completion
//
// It lives in a module of its own so that it stays out of brokerd's
// package layering: it imports nothing of brokerd, it runs the binary.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strings"
)

// Command is one command of the table, as its --help describes it.
type Command struct {
	Name    string // "key import"
	Summary string // the one-line summary of `brokerd --help`
	Usage   string // "brokerd key import --id ID ..."
	Text    string // the description, paragraphs separated by blank lines
	Flags   []Flag
}

// Flag is one flag of a command.
type Flag struct {
	Name string // "--alias"
	Arg  string // "name"; empty for a boolean flag
	Help string
}

// Top is what `brokerd --help` says.
type Top struct {
	Title    string // first line: what brokerd is
	Usage    string
	Trailer  string // the text after the command list
	Commands []Command
}

func main() {
	bin := flag.String("brokerd", "bin/brokerd", "the brokerd `binary` to document (built for this machine)")
	version := flag.String("version", "", "package `version` for the page's footer")
	date := flag.String("date", "", "`date` for the page's footer (YYYY-MM-DD)")
	man := flag.String("man", "", "write the manual page (section 8) to this `file`")
	comp := flag.String("completion", "", "write the bash completion to this `file`")
	flag.Parse()
	if err := run(*bin, *version, *date, *man, *comp); err != nil {
		fmt.Fprintln(os.Stderr, "gendoc:", err)
		os.Exit(1)
	}
}

func run(bin, version, date, man, comp string) error {
	top, err := Read(func(args ...string) (string, error) { return help(bin, args...) })
	if err != nil {
		return err
	}
	if man != "" {
		if err := os.WriteFile(man, []byte(Man(top, version, date)), 0o644); err != nil {
			return err
		}
	}
	if comp != "" {
		if err := os.WriteFile(comp, []byte(Completion(top)), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// help runs `brokerd ARGS... --help` and returns what it printed.
func help(bin string, args ...string) (string, error) {
	cmd := exec.Command(bin, append(args, "--help")...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LANG=C"}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s --help: %v: %s", bin, strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

var commandLine = regexp.MustCompile(`^  (\S+(?: \S+)?)\s{2,}(\S.*)$`)

// Read asks the binary for its command table and every command's help.
func Read(help func(args ...string) (string, error)) (*Top, error) {
	out, err := help()
	if err != nil {
		return nil, err
	}
	top, err := parseTop(out)
	if err != nil {
		return nil, err
	}
	for i := range top.Commands {
		c := &top.Commands[i]
		out, err := help(strings.Fields(c.Name)...)
		if err != nil {
			return nil, err
		}
		if err := parseCommand(out, c); err != nil {
			return nil, fmt.Errorf("brokerd %s --help: %w", c.Name, err)
		}
	}
	return top, nil
}

// parseTop reads `brokerd --help`: a title line, a usage line, "Commands:"
// with one indented "name  summary" line each, and a trailer.
func parseTop(out string) (*Top, error) {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	top := &Top{}
	state := "title"
	var trailer []string
	for _, l := range lines {
		switch {
		case state == "title" && strings.TrimSpace(l) != "":
			top.Title = strings.TrimSpace(l)
			state = "head"
		case state == "head" && strings.HasPrefix(l, "Usage: "):
			top.Usage = strings.TrimPrefix(l, "Usage: ")
		case state == "head" && l == "Commands:":
			state = "commands"
		case state == "commands" && commandLine.MatchString(l):
			m := commandLine.FindStringSubmatch(l)
			top.Commands = append(top.Commands, Command{Name: m[1], Summary: m[2]})
		case state == "commands" && strings.TrimSpace(l) == "":
			if len(top.Commands) > 0 {
				state = "trailer"
			}
		case state == "trailer":
			trailer = append(trailer, l)
		}
	}
	top.Trailer = strings.TrimSpace(strings.Join(trailer, "\n"))
	if top.Title == "" || top.Usage == "" || len(top.Commands) == 0 {
		return nil, errors.New("brokerd --help: no title, usage line or command list")
	}
	return top, nil
}

// parseCommand reads one command's help: "Usage: ...", the description,
// and "Flags:" as Go's flag package prints them (a "  --name arg" line,
// then "    \thelp" lines).
func parseCommand(out string, c *Command) error {
	sc := bufio.NewScanner(strings.NewReader(out))
	var text []string
	inFlags := false
	for sc.Scan() {
		l := sc.Text()
		switch {
		case c.Usage == "" && strings.HasPrefix(l, "Usage: "):
			c.Usage = strings.TrimSpace(strings.TrimPrefix(l, "Usage: "))
		case !inFlags && l == "Flags:":
			inFlags = true
		case inFlags && strings.HasPrefix(l, "  -"):
			name, arg, _ := strings.Cut(strings.TrimSpace(l), " ")
			c.Flags = append(c.Flags, Flag{Name: name, Arg: strings.TrimSpace(arg)})
		case inFlags && strings.HasPrefix(l, "    \t") && len(c.Flags) > 0:
			f := &c.Flags[len(c.Flags)-1]
			f.Help = strings.TrimSpace(f.Help + " " + strings.TrimSpace(l))
		case !inFlags && c.Usage != "":
			text = append(text, l)
		}
	}
	c.Text = strings.TrimSpace(strings.Join(text, "\n"))
	if c.Usage == "" {
		return errors.New("no usage line")
	}
	return nil
}

// Groups returns the first words of the command names, and the commands
// that are a single word.
func (t *Top) Groups() (groups map[string][]string, single []string) {
	groups = map[string][]string{}
	for _, c := range t.Commands {
		if g, sub, ok := strings.Cut(c.Name, " "); ok {
			groups[g] = append(groups[g], sub)
		} else {
			single = append(single, c.Name)
		}
	}
	return groups, single
}

// Man renders the manual page (brokerd(8)).
func Man(t *Top, version, date string) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w(".\\\" Generated by packaging/gendoc from brokerd --help; do not edit.\n")
	w(".TH BROKERD 8 %s %s \"System Administration\"\n", quote(date), quote("brokerd "+version))
	what := strings.TrimSuffix(strings.TrimPrefix(t.Title, "brokerd: "), ".")
	w(".SH NAME\nbrokerd \\- %s\n", roff(what))
	w(".SH SYNOPSIS\n.B brokerd\n%s\n", roff(strings.TrimPrefix(t.Usage, "brokerd ")))
	w(".SH DESCRIPTION\n%s\n", paragraphs(t.Trailer))
	w("%s", manService)
	w(".SH COMMANDS\n")
	for _, c := range t.Commands {
		w(".SS %s\n", quote(c.Name))
		w(".B %s\n.PP\n", roffArg(c.Usage))
		if c.Text != "" {
			w("%s\n", paragraphs(c.Text))
		} else {
			w("%s\n", roff(c.Summary))
		}
		for _, f := range c.Flags {
			w(".TP\n.B %s", roff(f.Name))
			if f.Arg != "" {
				w(" \\fI%s\\fR", roff(f.Arg))
			}
			w("\n%s\n", roff(f.Help))
		}
	}
	w("%s", manTail)
	return b.String()
}

// manService describes the service as the package installs it.
const manService = `.PP
Installed from the Debian package, the daemon (\fBbrokerd serve\fR) runs as
\fBbrokerd.service\fR under the system user \fBbrokerd\fR, in a sandbox that
lets it write only its state, its configuration directory and its runtime
directory, and shows it no device but the pseudo-devices and \fI/dev/tpmrm0\fR.
The API port (443) comes
from \fBbrokerd.socket\fR. On first install, when the TPM is present and no
configuration or state exists, the package runs \fBbrokerd init\fR for this
host's name and addresses, and starts the service; without a TPM it says how
to do that later (\fBdpkg\-reconfigure brokerd\fR). The other commands, run as
root or as a member of group \fBbrokerd\-admin\fR, reach the running daemon
through its admin socket.
`

// manTail is what the package adds: where things are on an appliance.
const manTail = `.SH FILES
.TP
.I /etc/brokerd/brokerd.toml
The configuration, written by \fBbrokerd init\fR (on first install, by the
package). Read at start.
.TP
.I /etc/brokerd/policy.toml
The access rules; \fBbrokerd policy\fR edits them, the daemon reloads them.
.TP
.I /etc/brokerd/tls/
The server certificate, the CA certificate clients verify it with
(\fIca.crt\fR), the client CAs and the CRL.
.TP
.I /var/lib/brokerd/brokerd.db
The state: key registry (TPM blobs, bound to this TPM), client certificates,
audit log.
.TP
.I /run/brokerd/admin.sock
The running daemon's admin socket (root and group \fBbrokerd-admin\fR).
.TP
.I /lib/systemd/system/brokerd.service\fR, \fI/lib/systemd/system/brokerd.socket
The service, and the API socket (port 443) systemd hands to it.
.SH ENVIRONMENT
.TP
.B BROKERD_CONFIG
The configuration file, unless \fB\-\-config\fR names one.
.TP
.B \fINAME\fB_PASSWORD
The password of an encrypted key file whose base name is \fIname\fR
(upper-cased, with \fB\-\fR and \fB.\fR as \fB_\fR), as the reference broker reads it.
.SH SEE ALSO
.BR systemctl (1),
.BR journalctl (1),
.BR systemd.socket (5),
/usr/share/doc/brokerd/README.md
`

// paragraphs renders text whose paragraphs are separated by blank lines.
func paragraphs(text string) string {
	var out []string
	for _, p := range strings.Split(text, "\n\n") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, roff(p))
		}
	}
	return strings.Join(out, "\n.PP\n")
}

// roff escapes text for troff: backslashes, a leading dot or quote, and
// the hyphens of options (--flag), which must be minus signs to be typed.
func roff(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		l = strings.ReplaceAll(l, `\`, `\e`)
		words := strings.Split(l, " ")
		for j, w := range words {
			if strings.HasPrefix(strings.TrimLeft(w, "([`'\""), "-") {
				words[j] = strings.ReplaceAll(w, "-", `\-`)
			}
		}
		l = strings.Join(words, " ")
		if strings.HasPrefix(l, ".") || strings.HasPrefix(l, "'") {
			l = `\&` + l
		}
		lines[i] = l
	}
	return strings.Join(lines, "\n")
}

// roffArg is roff for a macro argument line.
func roffArg(s string) string { return strings.ReplaceAll(roff(s), `"`, `\(dq`) }

func quote(s string) string { return `"` + strings.ReplaceAll(roff(s), `"`, `\(dq`) + `"` }

// Completion renders the bash completion: commands, subcommands, each
// command's flags, and file or directory names after flags taking them.
func Completion(t *Top) string {
	groups, single := t.Groups()
	var names, gnames []string
	for g := range groups {
		gnames = append(gnames, g)
	}
	sort.Strings(gnames)
	names = append(append(names, gnames...), single...)
	sort.Strings(names)
	// Flags that take an argument, in any command: the word after one is
	// its argument, not a command word.
	argFlags := map[string]bool{"--config": true}
	for _, c := range t.Commands {
		for _, f := range c.Flags {
			if f.Arg != "" {
				argFlags[f.Name] = true
			}
		}
	}
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# bash completion for brokerd(8). Generated by packaging/gendoc from brokerd --help; do not edit.\n")
	w("_brokerd() {\n")
	w("\tlocal cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}\n")
	w("\tlocal i cmd=() flags= files= dirs= argflags=%q\n", " "+strings.Join(sortedKeys(argFlags), " ")+" ")
	w("\tfor ((i = 1; i < COMP_CWORD; i++)); do\n")
	w("\t\tcase ${COMP_WORDS[i]} in\n")
	w("\t\t-*) case $argflags in *\" ${COMP_WORDS[i]} \"*) ((i++)) ;; esac ;;\n")
	w("\t\t*) [ ${#cmd[@]} -lt 2 ] && cmd+=(\"${COMP_WORDS[i]}\") ;;\n")
	w("\t\tesac\n")
	w("\tdone\n")
	w("\tif [ \"$prev\" = --config ]; then\n\t\tCOMPREPLY=($(compgen -f -- \"$cur\"))\n\t\treturn\n\tfi\n")
	w("\tcase ${#cmd[@]}:${cmd[0]} in\n")
	w("\t0:*)\n\t\tCOMPREPLY=($(compgen -W %q -- \"$cur\"))\n\t\treturn ;;\n", strings.Join(append(names, "--config", "--help"), " "))
	for _, g := range gnames {
		w("\t1:%s)\n\t\tCOMPREPLY=($(compgen -W %q -- \"$cur\"))\n\t\treturn ;;\n", g, strings.Join(groups[g], " "))
	}
	w("\tesac\n")
	w("\tcase \"${cmd[*]}\" in\n")
	for _, c := range t.Commands {
		var all, fileFlags, dirFlags []string
		for _, f := range c.Flags {
			all = append(all, f.Name)
			switch f.Arg {
			case "file", "path":
				fileFlags = append(fileFlags, f.Name)
			case "directory":
				dirFlags = append(dirFlags, f.Name)
			}
		}
		all = append(all, "--help")
		pattern := strings.ReplaceAll(c.Name, " ", "\\ ")
		if !strings.Contains(c.Name, " ") {
			pattern += "|" + c.Name + "\\ *" // a single-word command, then any word
		}
		w("\t%s)\n\t\tflags=%q files=%q dirs=%q ;;\n", pattern, strings.Join(all, " "),
			" "+strings.Join(fileFlags, " ")+" ", " "+strings.Join(dirFlags, " ")+" ")
	}
	w("\tesac\n")
	w("\tcase $files in *\" $prev \"*)\n\t\tCOMPREPLY=($(compgen -f -- \"$cur\"))\n\t\treturn ;;\n\tesac\n")
	w("\tcase $dirs in *\" $prev \"*)\n\t\tCOMPREPLY=($(compgen -d -- \"$cur\"))\n\t\treturn ;;\n\tesac\n")
	w("\tCOMPREPLY=($(compgen -W \"$flags\" -- \"$cur\"))\n")
	w("}\n")
	w("complete -o filenames -F _brokerd brokerd\n")
	return b.String()
}

func sortedKeys(m map[string]bool) []string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
