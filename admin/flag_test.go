package admin_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/brokerd/brokerd/admin"
)

// TestPathFlag: a parsed path flag grants its access to its path, cleaned,
// and nothing else; an unset one grants nothing.
func TestPathFlag(t *testing.T) {
	t.Parallel()
	var grants []admin.Grant
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	in, out, unset := new(string), new(string), new(string)
	fs.Var(admin.PathFlag{Value: in, Access: admin.Read, Grants: &grants}, "in", "")
	fs.Var(admin.PathFlag{Value: out, Access: admin.Write, Grants: &grants}, "out", "")
	fs.Var(admin.PathFlag{Value: unset, Access: admin.Dir, Grants: &grants}, "dir", "")
	if err := fs.Parse([]string{"--in", "./a/../k.pem", "--out=o.pem", "--dir", ""}); err != nil {
		t.Fatal(err)
	}
	if *in != "./a/../k.pem" || *out != "o.pem" || len(grants) != 2 {
		t.Fatalf("values %q %q, grants %v", *in, *out, grants)
	}
	allow := admin.Allow(grants)
	for _, c := range []struct {
		op, path string
		ok       bool
	}{{"read", "k.pem", true}, {"write", "k.pem", false}, {"write", "o.pem", true}, {"read", "o.pem", false}, {"mkdir", ".", false}} {
		if err := allow(c.op, c.path); (err == nil) != c.ok {
			t.Errorf("%s %s: %v, want ok=%v", c.op, c.path, err, c.ok)
		}
	}
	if got := (admin.PathFlag{}).String(); got != "" {
		t.Errorf("zero PathFlag: %q", got)
	}
}

func TestExecWithoutDaemon(t *testing.T) {
	t.Parallel()
	_, err := admin.Exec(context.Background(), filepath.Join(t.TempDir(), "admin.sock"), admin.Request{Args: []string{"key", "list"}}, admin.Local{})
	if !errors.Is(err, admin.ErrNoDaemon) {
		t.Fatalf("Exec without a daemon: %v", err)
	}
	if self := admin.Self(); !strings.HasPrefix(self, "local user ") || !strings.Contains(self, "uid ") {
		t.Errorf("Self() = %q", self)
	}
}

// TestWritableAndNoPrompt: the daemon asks whether a caller's file can be
// written before it acts, within the grants; a caller without a terminal
// answers a prompt with ErrNoPrompt.
func TestWritableAndNoPrompt(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var answers []string
	path := serve(t, admin.RootOrGroup(-1), func(ctx context.Context, s *admin.Session) int {
		for _, p := range s.Request.Args {
			answers = append(answers, fmt.Sprint(s.Writable(p)))
		}
		if _, err := s.Prompt("password: "); !errors.Is(err, admin.ErrNoPrompt) {
			answers = append(answers, "prompt: "+fmt.Sprint(err))
		}
		return 0
	})
	ok, missing, denied := filepath.Join(dir, "ok.crt"), filepath.Join(dir, "none", "x.crt"), filepath.Join(dir, "other.crt")
	grants := []admin.Grant{{Path: ok, Access: admin.Write}, {Path: missing, Access: admin.Write}}
	code, err := call(t, path, admin.Request{Args: []string{ok, missing, denied}}, admin.Local{Stdout: io.Discard, Stderr: io.Discard, Allow: admin.Allow(grants)})
	if err != nil || code != 0 || len(answers) != 3 {
		t.Fatalf("call: %d %v %q", code, err, answers)
	}
	if answers[0] != "<nil>" || !strings.Contains(answers[1], "does not exist") || !strings.Contains(answers[2], "does not name") {
		t.Errorf("answers %q", answers)
	}
}
