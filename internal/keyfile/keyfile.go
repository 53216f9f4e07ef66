// Package keyfile reads the key files an operator names on the command
// line: PEM private keys, with the password of an encrypted one from a
// password file, the reference broker's <KEY_FILE>_PASSWORD variable or a
// question on the operator's terminal, and keys wrapped by `brokerd key
// wrap`. Inside the daemon the files, the variables and the terminal are
// the caller's, reached through the admin socket.
package keyfile

import (
	"crypto"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/term"

	"github.com/brokerd/brokerd/admin"
	"github.com/brokerd/brokerd/keys"
	"github.com/brokerd/brokerd/tpm"
)

// Reader reads the operator's key files.
type Reader struct {
	// ReadFile reads one of the operator's files.
	ReadFile func(path string) ([]byte, error)
	// Getenv reads the operator's environment.
	Getenv func(string) string
	// Prompt asks the operator through the admin socket (it fails with
	// admin.ErrNoPrompt when the caller has no terminal); nil: ask on
	// Stdin when it is a terminal, writing the question to Stderr.
	Prompt func(question string) ([]byte, error)
	Stdin  io.Reader
	Stderr io.Writer
}

// Ask asks the operator for a password on their terminal; ok is false
// when there is no terminal to ask on.
func (r Reader) Ask(question string) (pw []byte, ok bool, err error) {
	if r.Prompt != nil {
		pw, err = r.Prompt(question)
		if errors.Is(err, admin.ErrNoPrompt) {
			return nil, false, nil
		}
		return pw, err == nil, err
	}
	f, isFile := r.Stdin.(*os.File)
	if !isFile || !term.IsTerminal(int(f.Fd())) {
		return nil, false, nil
	}
	fmt.Fprint(r.Stderr, question)
	pw, err = term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(r.Stderr)
	return pw, true, err
}

// Password returns the password source of the encrypted key file keyFile:
// the file pwFile (named by the flag fileFlag, default --password-file),
// else <KEY_FILE_NAME>_PASSWORD, else a question on the terminal.
func (r Reader) Password(keyFile, pwFile, fileFlag string) keys.PasswordFunc {
	return keys.PasswordSource{KeyFile: keyFile, File: pwFile, FileFlag: fileFlag, ReadFile: r.ReadFile,
		Getenv: r.Getenv, Ask: r.Ask}.Func()
}

// Read reads the private key in keyFile, or else the wrapped key in
// blobFile; a parse error names the file.
func (r Reader) Read(keyFile, blobFile, pwFile string) (crypto.Signer, *tpm.WrappedKey, error) {
	path := keyFile
	if path == "" {
		path = blobFile
	}
	data, err := r.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	if keyFile == "" {
		w, err := tpm.ParseWrappedKey(data)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", path, err)
		}
		return nil, w, nil
	}
	defer clear(data) // the key's own copy is all that stays in memory
	priv, err := keys.ParsePrivateKeyPEM(data, r.Password(keyFile, pwFile, ""))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return priv, nil, nil
}
