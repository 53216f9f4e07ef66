//go:build simulator

package main

import (
	"bufio"
	"encoding/base64"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/brokerd/brokerd/internal/testproc"
)

// TestQuickStartDemo runs what `make run` runs and pastes every curl
// command it prints into a shell; then runs it again on the same state.
func TestQuickStartDemo(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl is not installed: run `make test`, which installs it")
	}
	bin, err := buildBrokerd("brokerd-demo", []string{"CGO_ENABLED=1"}, []string{"-tags", "simulator"})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "demo dir") // a space, as a user's path may have
	var first string
	for run := range 2 {
		d := startDemo(t, bin, dir)
		if len(d.curls) < 5 {
			t.Fatalf("only %d curl commands printed", len(d.curls))
		}
		for _, line := range d.curls {
			out, err := exec.Command("sh", "-c", line).CombinedOutput()
			if err != nil || !regexp.MustCompile(`^\{"result":`).Match(out) {
				t.Fatalf("pasted %s\n→ %v %s", line, err, out)
			}
		}
		out, _ := exec.Command("sh", "-c", d.curls[1]).Output()
		sig, _ := base64.StdEncoding.DecodeString(strings.TrimSuffix(strings.TrimPrefix(string(out), `{"result":"`), `"}`))
		if len(sig) != 256 {
			t.Fatalf("qseal.key RS signature of %d bytes", len(sig))
		}
		// RS is deterministic: the second run signs with the same key.
		if run == 0 {
			first = string(out)
		} else if string(out) != first {
			t.Fatal("the demo's key changed between runs")
		}
		// The audit commands it printed work while it runs (through the
		// admin socket) and after it stopped.
		d.pasteExport(t, "while the demo runs")
		d.stop(t, run)
		d.pasteExport(t, "after the demo stopped")
		if out, err := exec.Command("sh", "-c", d.audits[1]).CombinedOutput(); err != nil || !strings.HasSuffix(strings.TrimSpace(string(out)), "ok") {
			t.Fatalf("pasted %s\n→ %v %s", d.audits[1], err, out)
		}
	}
}

// demo is a running `brokerd demo` and the commands it printed.
type demo struct {
	cmd           *exec.Cmd
	exited        <-chan error
	stderr        *strings.Builder
	curls, audits []string
}

// startDemo starts the demo and reads what it prints until its two audit
// commands.
func startDemo(t *testing.T, bin, dir string) *demo {
	t.Helper()
	d := &demo{cmd: exec.Command(bin, "demo", "--dir", dir, "--listen", "127.0.0.1:0"), stderr: &strings.Builder{}}
	stdout, _ := d.cmd.StdoutPipe()
	d.cmd.Stderr = d.stderr
	var err error
	if d.exited, err = testproc.Start(d.cmd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.cmd.Process.Kill() })
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	timeout := time.After(60 * time.Second)
	for len(d.audits) < 2 {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("demo exited early:\n%s", d.stderr.String())
			}
			if strings.HasPrefix(line, "  curl ") {
				d.curls = append(d.curls, strings.TrimSpace(line))
			}
			if strings.HasPrefix(line, "  ") && strings.Contains(line, " audit ") {
				d.audits = append(d.audits, strings.TrimSpace(line))
			}
		case <-timeout:
			t.Fatalf("the demo printed no commands within 60s:\n%s", d.stderr.String())
		}
	}
	go func() {
		for range lines { // the rest of its output
		}
	}()
	return d
}

// pasteExport runs the demo's audit export command: it lists the signatures
// of the curl commands.
func (d *demo) pasteExport(t *testing.T, when string) {
	t.Helper()
	export, err := exec.Command("sh", "-c", d.audits[0]).Output()
	if err != nil || strings.Count(string(export), `"op":"sign"`) < 4 {
		t.Fatalf("pasted %s %s\n→ %v %s", d.audits[0], when, err, export)
	}
}

// stop sends Ctrl-C and checks a clean exit without errors logged.
func (d *demo) stop(t *testing.T, run int) {
	t.Helper()
	d.cmd.Process.Signal(syscall.SIGINT)
	if err := <-d.exited; err != nil {
		t.Fatalf("demo exit after Ctrl-C: %v\n%s", err, d.stderr.String())
	}
	if strings.Contains(d.stderr.String(), "level=ERROR") {
		t.Fatalf("run %d logged errors:\n%s", run+1, d.stderr.String())
	}
}
