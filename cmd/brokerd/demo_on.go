//go:build simulator

package main

import (
	"context"
	"crypto"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/brokerd/brokerd/config"
	"github.com/brokerd/brokerd/keys"
	"github.com/brokerd/brokerd/tpm"
)

// demoCommands adds `brokerd demo` to simulator builds.
func demoCommands() map[string]command {
	return map[string]command{"demo": {"run brokerd on the embedded TPM simulator (demo builds only)", cmdDemo}}
}

// demoKeys are the keys the demo makes on first run.
var demoKeys = []struct {
	id  string
	alg tpm.Algorithm
}{{"qseal.key", tpm.RSA2048}, {"qwac.key", tpm.P256}}

func cmdDemo(ctx context.Context, e *env, args []string) error {
	fs := e.flags("demo", "[--dir DIR]",
		"Run brokerd on the in-process TPM simulator: on first run, write a configuration and\n"+
			"state in DIR and create demo keys; then sign with them.")
	dir := fs.String("dir", "demo", "demo `directory` (configuration and state)")
	if err := parse(fs, args); err != nil {
		return err
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	cfgPath := filepath.Join(abs, "brokerd.toml")
	if _, err := os.Stat(cfgPath); errors.Is(err, os.ErrNotExist) {
		cfg := config.Default()
		cfg.TPM.Address = tpm.KindSimulator
		cfg.StateDir = filepath.Join(abs, "state")
		if _, err := initialize(cfgPath, cfg, e.logger()); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "initialised %s on the TPM simulator\n", abs)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	s, err := openState(cfg, e.logger())
	if err != nil {
		return err
	}
	defer s.Close()
	for _, k := range demoKeys {
		if _, err := s.keys.Info(k.id); errors.Is(err, keys.ErrUnknownKey) {
			if _, _, err := s.keys.Create(ctx, k.id, k.alg, keys.CreateOptions{}); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "created %s (%s) inside the TPM\n", k.id, k.alg)
		}
	}
	for _, k := range demoKeys {
		sig, alg, err := s.keys.Sign(ctx, k.id, []byte("a string to sign"), "", crypto.SHA256)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "%s signs \"a string to sign\" (%s/SHA256): %s\n", k.id, alg, base64.StdEncoding.EncodeToString(sig))
	}
	return nil
}
