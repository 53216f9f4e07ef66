package main

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
)

// The help texts as brokerd prints them (abridged).
var helps = map[string]string{
	"": `brokerd: eIDAS keys in a TPM, used by LAN clients over mutual TLS.

Usage: brokerd [--config FILE] COMMAND [flags]

Commands:
  client issue   make a client key and certificate here (quick LAN set-up)
  init           write the configuration and state directory, bind them to the TPM
  key import     import a PEM key (or a wrapped blob) into the TPM

Every command takes --help. The configuration is --config FILE, else $BROKERD_CONFIG,
else /etc/brokerd/brokerd.toml.
`,
	"client issue": `Usage: brokerd client issue --name NAME --out DIR [--role URL]... [--days N]

Make a client's key (P-256) and certificate here.
.dotted line, and a \backslash.

Flags:
  --days days
    	validity in days (default 0)
  --json 
    	print JSON
  --out directory
    	directory to write the files to
`,
	"init": `Usage: brokerd init --dir DIR [flags]

Write DIR/brokerd.toml.

Flags:
  --dir directory
    	configuration directory
  --tls-cert file
    	server certificate file
`,
	"key import": `Usage: brokerd key import --id ID (--key FILE | --blob FILE) [flags]

Import a key.

Flags:
  --key file
    	PEM private key file
`,
}

func fakeHelp(args ...string) (string, error) {
	h, ok := helps[strings.Join(args, " ")]
	if !ok {
		return "", fmt.Errorf("unknown command %q", args)
	}
	return h, nil
}

func TestReadParsesTheCommandTable(t *testing.T) {
	top, err := Read(fakeHelp)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range top.Commands {
		names = append(names, c.Name)
	}
	if got := strings.Join(names, ","); got != "client issue,init,key import" {
		t.Fatalf("commands = %s", got)
	}
	c := top.Commands[0]
	if c.Usage != "brokerd client issue --name NAME --out DIR [--role URL]... [--days N]" {
		t.Errorf("usage = %q", c.Usage)
	}
	want := []Flag{{"--days", "days", "validity in days (default 0)"}, {"--json", "", "print JSON"},
		{"--out", "directory", "directory to write the files to"}}
	if fmt.Sprint(c.Flags) != fmt.Sprint(want) {
		t.Errorf("flags = %v, want %v", c.Flags, want)
	}
	if !strings.HasPrefix(top.Trailer, "Every command takes --help.") {
		t.Errorf("trailer = %q", top.Trailer)
	}
}

func TestManEscapesForTroff(t *testing.T) {
	top, err := Read(fakeHelp)
	if err != nil {
		t.Fatal(err)
	}
	man := Man(top, "1.0", "2026-11-30")
	for _, want := range []string{
		".TH BROKERD 8 \"2026-11-30\" \"brokerd 1.0\"",
		"brokerd \\- eIDAS keys in a TPM, used by LAN clients over mutual TLS\n",
		"\\&.dotted line, and a \\ebackslash.",
		".B \\-\\-days \\fIdays\\fR\n",
		".B brokerd client issue \\-\\-name NAME",
	} {
		if !strings.Contains(man, want) {
			t.Errorf("manual page lacks %q", want)
		}
	}
	if groff, err := exec.LookPath("groff"); err == nil {
		cmd := exec.Command(groff, "-man", "-Tutf8", "-ww", "-z")
		cmd.Stdin = strings.NewReader(man)
		if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
			t.Errorf("groff: %v\n%s", err, out)
		}
	}
}

func TestCompletion(t *testing.T) {
	top, err := Read(fakeHelp)
	if err != nil {
		t.Fatal(err)
	}
	script := Completion(top)
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	// Complete a few command lines with the generated function.
	for line, want := range map[string]string{
		"brokerd ":                         "client init key --config --help",
		"brokerd key ":                     "import",
		"brokerd client issue --":          "--days --json --out --help",
		"brokerd --config x.toml init --d": "--dir",
		"brokerd init --dir /nonexistent/": "",
	} {
		prog := script + fmt.Sprintf(`
COMP_WORDS=(%s)
[ "${COMP_WORDS[-1]}" = "" ] || true
COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
_brokerd
echo "${COMPREPLY[*]}"
`, words(line))
		out, err := exec.Command(bash, "-c", prog).CombinedOutput()
		if err != nil {
			t.Fatalf("%q: %v\n%s", line, err, out)
		}
		if got := strings.TrimSpace(string(out)); got != want {
			t.Errorf("%q completes to %q, want %q", line, got, want)
		}
	}
}

// words quotes a command line's words for a bash array; a trailing space
// starts an empty word.
func words(line string) string {
	ws := strings.Split(line, " ")
	for i, w := range ws {
		ws[i] = "'" + w + "'"
	}
	return strings.Join(ws, " ")
}
