package keys

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
)

// ErrPassword is returned when an encrypted key's password is missing or
// wrong.
var ErrPassword = errors.New("wrong or missing password")

// NoPasswordError says that an encrypted key came without a password, and
// where one may come from. It matches ErrPassword.
type NoPasswordError struct {
	// Hint says where a password may come from; "" for nothing to say.
	Hint string
}

func (e *NoPasswordError) Error() string {
	if e.Hint == "" {
		return "no password given"
	}
	return "no password given: " + e.Hint
}

// Is makes errors.Is(err, ErrPassword) hold.
func (e *NoPasswordError) Is(target error) bool { return target == ErrPassword }

// PasswordFunc supplies the password of an encrypted key. It is called only
// when the key is encrypted.
type PasswordFunc func() ([]byte, error)

var passwordEnvReplacer = regexp.MustCompile(`[-./]`)

// PasswordEnv is the environment variable the reference broker reads an
// encrypted key's password from: the key file's base name with '-', '.'
// and '/' replaced by '_', upper-cased, plus "_PASSWORD" (qwac.key →
// QWAC_KEY_PASSWORD).
func PasswordEnv(keyFile string) string {
	return strings.ToUpper(passwordEnvReplacer.ReplaceAllString(filepath.Base(keyFile), "_")) + "_PASSWORD"
}

// PasswordSource finds the password of an encrypted key file where the
// command line looks for it, in order: a password file, the variable
// PasswordEnv(KeyFile) (the reference broker's convention), a question on
// the user's terminal.
type PasswordSource struct {
	// KeyFile is the encrypted key's file; its base name names the variable.
	KeyFile string
	// File holds the password (trailing line ends are dropped); "": none.
	File string
	// FileFlag is the flag that names File, for the message when no
	// password is found; "": --password-file.
	FileFlag string
	// ReadFile reads File.
	ReadFile func(path string) ([]byte, error)
	// Getenv reads the environment; nil: no variables.
	Getenv func(name string) string
	// Ask asks the user without echo; asked is false when there is no
	// terminal to ask on. Nil: never ask.
	Ask func(question string) (pw []byte, asked bool, err error)
}

// Func returns the PasswordFunc that reads the first source present. When
// none is, its error is a NoPasswordError naming the three.
func (p PasswordSource) Func() PasswordFunc {
	return func() ([]byte, error) {
		if p.File != "" {
			data, err := p.ReadFile(p.File)
			if err != nil {
				return nil, fmt.Errorf("read the password file: %w", err)
			}
			return bytes.TrimRight(data, "\r\n"), nil
		}
		env := PasswordEnv(p.KeyFile)
		if p.Getenv != nil {
			if v := p.Getenv(env); v != "" {
				return []byte(v), nil
			}
		}
		if p.Ask != nil {
			if pw, asked, err := p.Ask(fmt.Sprintf("password for %s: ", p.KeyFile)); asked || err != nil {
				return pw, err
			}
		}
		flag := p.FileFlag
		if flag == "" {
			flag = "--password-file"
		}
		return nil, &NoPasswordError{Hint: fmt.Sprintf("give %s FILE, set %s, or run brokerd on a terminal to be asked", flag, env)}
	}
}
