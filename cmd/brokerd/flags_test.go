package main

import (
	"context"
	"testing"

	"github.com/brokerd/brokerd/admin"
)

// TestGrantsFromFlags: what the daemon may touch of a caller's files comes
// from the command's parsed path flags, with the access each declares;
// nothing else on the command line opens a file.
func TestGrantsFromFlags(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		args []string
		op   string
		path string
		ok   bool
	}{
		{"key import", []string{"--id", "k", "--key", "./keys/../keys/q.key"}, "read", "keys/q.key", true},
		{"key import", []string{"--id", "k", "--key", "q.key"}, "read", "/etc/shadow", false},
		{"key import", []string{"--id", "k", "--key=q.key"}, "read", "q.key", true},
		{"key import", []string{"--id", "k", "--key", "q.key"}, "write", "q.key", false},
		{"key import", []string{"--id", "/etc/shadow", "--key", "q.key"}, "read", "/etc/shadow", false},
		{"key import", []string{"--id", "k", "--key", "q.key", "--alias", "/etc/shadow"}, "read", "/etc/shadow", false},
		{"key import", []string{"--id", "k", "--key", "q.key", "--password-file", "pw"}, "read", "pw", true},
		{"key create", []string{"--id", "k", "--alg", "p256", "--csr-out", "out/k.csr"}, "write", "out/k.csr", true},
		{"key create", []string{"--id", "k", "--alg", "p256", "--csr-out", "out/k.csr"}, "write", "out/authorized_keys", false},
		{"key create", []string{"--id", "k", "--alg", "p256", "--csr-out", "out/k.csr"}, "read", "out/k.csr", false},
		{"client issue", []string{"--name", "a", "--out", "dir/"}, "write", "dir/a.key", true},
		{"client issue", []string{"--name", "a", "--out=dir"}, "write", "dir/ca.crt", true},
		{"client issue", []string{"--name", "a", "--out", "dir"}, "mkdir", "dir", true},
		{"client issue", []string{"--name", "a", "--out", "dir"}, "write", "dir/sub/a.key", false},
		{"client issue", []string{"--name", "a", "--out", "dir"}, "write", "elsewhere/a.key", false},
		{"client sign", []string{"--csr", "a.csr", "--name", "a", "--out", "dir"}, "write", "dir/a.key", false}, // --out is a file there
		{"client sign", []string{"--csr", "a.csr", "--name", "a", "--out", "a.crt"}, "write", "a.crt", true},
		{"client sign", []string{"--csr", "a.csr", "--name", "a", "--out", "a.crt"}, "read", "a.csr", true},
		{"trust add", []string{"--ca", "bank.pem"}, "read", "bank.pem", true},
		{"policy test", []string{"--cert", "c.pem", "--op", "sign", "--key", "k"}, "read", "c.pem", true},
		{"tpm ek", []string{"--out", "ek.pem"}, "write", "ek.pem", true},
	}
	table := commandTable()
	for _, c := range cases {
		e := &env{getenv: func(string) string { return "" }}
		grants, ok := e.probeFlags(context.Background(), table[c.name], c.args)
		if !ok {
			t.Errorf("%s %v: does not parse", c.name, c.args)
			continue
		}
		err := admin.Allow(grants)(c.op, c.path)
		if (err == nil) != c.ok {
			t.Errorf("%s %v: %s %s: %v, want ok=%v", c.name, c.args, c.op, c.path, err, c.ok)
		}
	}
	// A command line that does not parse is not sent to the daemon.
	e := &env{getenv: func(string) string { return "" }}
	if _, ok := e.probeFlags(context.Background(), table["key import"], []string{"--nope"}); ok {
		t.Error("an unknown flag probed as fine")
	}
}
