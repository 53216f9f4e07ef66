//go:build simulator

package main

import (
	"bufio"
	"encoding/base64"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestQuickStartDemo runs what `make run` runs and pastes every curl
// command it prints into a shell; then runs it again on the same state.
func TestQuickStartDemo(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl is not installed: run `make test`, which installs it")
	}
	bin := filepath.Join(t.TempDir(), "brokerd-demo")
	build := exec.Command("go", "build", "-tags", "simulator", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	dir := filepath.Join(t.TempDir(), "demo dir") // a space, as a user's path may have
	var first string
	for run := range 2 {
		cmd := exec.Command(bin, "demo", "--dir", dir, "--listen", "127.0.0.1:0")
		stdout, _ := cmd.StdoutPipe()
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var curls, audits []string
		lines := make(chan string)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		timeout := time.After(60 * time.Second)
	read:
		for {
			select {
			case line, ok := <-lines:
				if !ok {
					t.Fatalf("demo exited early:\n%s", stderr.String())
				}
				if strings.HasPrefix(line, "  curl ") {
					curls = append(curls, strings.TrimSpace(line))
				}
				if strings.HasPrefix(line, "  ") && strings.Contains(line, " audit ") {
					audits = append(audits, strings.TrimSpace(line))
				}
				if len(audits) == 2 {
					break read
				}
			case <-timeout:
				t.Fatalf("the demo printed no commands within 60s:\n%s", stderr.String())
			}
		}
		go io.Copy(io.Discard, stdout)
		if len(curls) < 5 {
			t.Fatalf("only %d curl commands printed", len(curls))
		}
		for _, line := range curls {
			out, err := exec.Command("sh", "-c", line).CombinedOutput()
			if err != nil || !regexp.MustCompile(`^\{"result":`).Match(out) {
				t.Fatalf("pasted %s\n→ %v %s", line, err, out)
			}
		}
		out, _ := exec.Command("sh", "-c", curls[1]).Output()
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
		export, err := exec.Command("sh", "-c", audits[0]).Output()
		if err != nil || strings.Count(string(export), `"op":"sign"`) < 4 {
			t.Fatalf("pasted %s while the demo runs\n→ %v %s", audits[0], err, export)
		}
		cmd.Process.Signal(syscall.SIGINT)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("demo exit after Ctrl-C: %v\n%s", err, stderr.String())
		}
		if strings.Contains(stderr.String(), "level=ERROR") {
			t.Fatalf("run %d logged errors:\n%s", run+1, stderr.String())
		}
		export, err = exec.Command("sh", "-c", audits[0]).Output()
		if err != nil || strings.Count(string(export), `"op":"sign"`) < 4 {
			t.Fatalf("pasted %s\n→ %v %s", audits[0], err, export)
		}
		if out, err := exec.Command("sh", "-c", audits[1]).CombinedOutput(); err != nil || !strings.HasSuffix(strings.TrimSpace(string(out)), "ok") {
			t.Fatalf("pasted %s\n→ %v %s", audits[1], err, out)
		}
	}
}
