package keys_test

import (
	"crypto"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/brokerd/brokerd/keys"
	"github.com/brokerd/brokerd/store"
)

// TestPasswordSource: the password file first, then the key file's
// variable, then the terminal; with none of them, an error that names all
// three and matches ErrPassword.
func TestPasswordSource(t *testing.T) {
	t.Parallel()
	files := map[string]string{"pw": "from file\r\n"}
	read := func(p string) ([]byte, error) {
		if v, ok := files[p]; ok {
			return []byte(v), nil
		}
		return nil, os.ErrNotExist
	}
	env := map[string]string{"QWAC_KEY_PASSWORD": "from env"}
	terminal := func(q string) ([]byte, bool, error) { return []byte("typed for " + q), true, nil }
	noTerminal := func(string) ([]byte, bool, error) { return nil, false, nil }
	cases := []struct {
		name string
		src  keys.PasswordSource
		want string // the password, or a part of the error
		ok   bool
	}{
		{"file", keys.PasswordSource{KeyFile: "/k/qwac.key", File: "pw", ReadFile: read, Getenv: mapEnv(env), Ask: terminal}, "from file", true},
		{"missing file", keys.PasswordSource{KeyFile: "qwac.key", File: "nope", ReadFile: read}, "read the password file", false},
		{"variable", keys.PasswordSource{KeyFile: "/k/qwac.key", ReadFile: read, Getenv: mapEnv(env), Ask: terminal}, "from env", true},
		{"terminal", keys.PasswordSource{KeyFile: "q.key", ReadFile: read, Getenv: mapEnv(env), Ask: terminal}, "typed for password for q.key: ", true},
		{"none", keys.PasswordSource{KeyFile: "/k/q.key", ReadFile: read, Getenv: mapEnv(env), Ask: noTerminal},
			"no password given: give --password-file FILE, set Q_KEY_PASSWORD, or run brokerd on a terminal to be asked", false},
		{"none, other flag", keys.PasswordSource{KeyFile: "tls.key", FileFlag: "--tls-key-password-file", ReadFile: read},
			"give --tls-key-password-file FILE, set TLS_KEY_PASSWORD", false},
	}
	for _, c := range cases {
		pw, err := c.src.Func()()
		switch {
		case c.ok && (err != nil || string(pw) != c.want):
			t.Errorf("%s: %q, %v; want %q", c.name, pw, err, c.want)
		case !c.ok && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %q, %v; want an error containing %q", c.name, pw, err, c.want)
		}
	}
	_, err := keys.PasswordSource{KeyFile: "k"}.Func()()
	var np *keys.NoPasswordError
	if !errors.As(err, &np) || !errors.Is(err, keys.ErrPassword) {
		t.Errorf("no source: %v, want a NoPasswordError matching ErrPassword", err)
	}
}

func mapEnv(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestParseSignAlgAndHash(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]keys.SignAlg{"": "", "RS": keys.RS, "PS": keys.PS, "ES": keys.ES} {
		if got, err := keys.ParseSignAlg(in); err != nil || got != want {
			t.Errorf("ParseSignAlg(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := keys.ParseSignAlg("rs"); err == nil || !strings.Contains(err.Error(), "want RS, PS or ES") {
		t.Errorf("ParseSignAlg(rs): %v", err)
	}
	for in, want := range map[string]crypto.Hash{"SHA256": crypto.SHA256, "SHA512": crypto.SHA512} {
		if got, err := keys.ParseHash(in); err != nil || got != want {
			t.Errorf("ParseHash(%q) = %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "SHA384", "sha256"} {
		if _, err := keys.ParseHash(in); err == nil || !strings.Contains(err.Error(), "want SHA256 or SHA512") {
			t.Errorf("ParseHash(%q): %v", in, err)
		}
	}
}

// TestNames: a key's id and aliases from the state file alone; brokerd's
// own keys are nobody's to name.
func TestNames(t *testing.T) {
	t.Parallel()
	st, err := store.Open(filepath.Join(t.TempDir(), store.FileName), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, r := range []store.KeyRecord{{ID: "qwac.key", Aliases: []string{"qwac.crt"}, Data: []byte("{}")}, {ID: keys.ReservedPrefix + "ca", Data: []byte("{}")}} {
		if err := st.PutKey(r, false); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"qwac.key", "qwac.crt"} {
		if got, err := keys.Names(st, name); err != nil || strings.Join(got, " ") != "qwac.key qwac.crt" {
			t.Errorf("Names(%s) = %v, %v", name, got, err)
		}
	}
	for _, name := range []string{"nosuch.key", keys.ReservedPrefix + "ca"} {
		if _, err := keys.Names(st, name); !errors.Is(err, keys.ErrUnknownKey) {
			t.Errorf("Names(%s): %v, want ErrUnknownKey", name, err)
		}
	}
}
