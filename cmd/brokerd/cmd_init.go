package main

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/brokerd/brokerd/config"
	"github.com/brokerd/brokerd/keys"
	"github.com/brokerd/brokerd/tpm"
)

func cmdInit(_ context.Context, e *env, args []string) error {
	fs := e.flags("init", "--dir DIR [flags]",
		"Write DIR/brokerd.toml and the state directory, and bind the state to the TPM.\n"+
			"Refuses to overwrite an existing configuration or state.")
	dir := fs.String("dir", "", "configuration `directory`; brokerd.toml is written there")
	addr := fs.String("tpm", tpm.DefaultAddress, "TPM `address`: device:PATH, swtpm:SOCKET or simulator (demo builds)")
	stateDir := fs.String("state-dir", "", "state `directory` (default DIR/state)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := required(fs, "dir"); err != nil {
		return err
	}
	cfgPath, err := filepath.Abs(filepath.Join(*dir, "brokerd.toml"))
	if err != nil {
		return err
	}
	cfg := config.Default()
	cfg.TPM.Address = *addr
	cfg.StateDir = *stateDir
	if cfg.StateDir == "" {
		cfg.StateDir = filepath.Join(filepath.Dir(cfgPath), "state")
	}
	if cfg.StateDir, err = filepath.Abs(cfg.StateDir); err != nil {
		return err
	}
	srk, err := initialize(cfgPath, cfg, e.logger())
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "wrote %s\nstate in %s, bound to TPM %s (storage root key %s)\n",
		cfgPath, cfg.StateDir, cfg.TPM.Address, hex.EncodeToString(srk)[:16])
	fmt.Fprintf(e.stdout, "next: export %s=%s, then brokerd key import / key create\n", config.EnvPath, cfgPath)
	return nil
}

// initialize writes a new configuration and state bound to the TPM, and
// returns the TPM's storage root key name.
func initialize(cfgPath string, cfg *config.Config, log *slog.Logger) ([]byte, error) {
	if a, err := tpm.ParseAddress(cfg.TPM.Address); err == nil && a.Kind == tpm.KindSimulator && cfg.TPM.SimulatorSeed == 0 {
		var b [8]byte
		rand.Read(b[:])
		cfg.TPM.SimulatorSeed = int64(binary.LittleEndian.Uint64(b[:])>>1) | 1
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	for _, p := range []string{cfgPath, statePath(cfg)} {
		if _, err := os.Stat(p); err == nil {
			return nil, fmt.Errorf("%s exists: refusing to overwrite an existing identity", p)
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, err
	}
	s, err := openState(cfg, log)
	if err != nil {
		os.Remove(statePath(cfg))
		return nil, err
	}
	srk := s.dev.SRKName()
	s.Close()
	if err := cfg.WriteNew(cfgPath); err != nil {
		os.Remove(statePath(cfg))
		return nil, err
	}
	return srk, nil
}

// checkReport is what `config check --json` prints.
type checkReport struct {
	Config   string      `json:"config"`
	TPM      string      `json:"tpm"`
	State    string      `json:"state"`
	Keys     []keyReport `json:"keys"`
	Problems []string    `json:"problems"`
}

type keyReport struct {
	ID    string `json:"id"`
	Kind  string `json:"kind"`
	Alg   string `json:"algorithm"`
	Error string `json:"error,omitempty"`
}

func cmdConfigCheck(_ context.Context, e *env, args []string) error {
	fs := e.flags("config check", "[--json]",
		"Validate the configuration, reach the TPM, open the state and sign a test digest\n"+
			"with every key. Names every problem found.")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	path := config.Path(e.configFlag, e.getenv)
	rep := checkReport{Config: path, Keys: []keyReport{}, Problems: []string{}}
	fail := func(err error) {
		rep.Problems = append(rep.Problems, strings.Split(strings.TrimSpace(err.Error()), "\n")...)
	}
	cfg, err := config.Load(path)
	if err != nil {
		fail(err)
	} else {
		s, err := openState(cfg, e.logger())
		if err != nil {
			fail(err)
		} else {
			rep.TPM, rep.State = cfg.TPM.Address, statePath(cfg)
			checkKeys(s, &rep)
			s.Close()
		}
	}
	if *asJSON {
		if err := writeJSON(e.stdout, rep); err != nil {
			return err
		}
	} else {
		printCheck(e, rep)
	}
	if n := len(rep.Problems); n > 0 {
		return fmt.Errorf("%d problem(s) found", n)
	}
	return nil
}

func checkKeys(s *state, rep *checkReport) {
	infos, err := s.keys.List()
	if err != nil {
		rep.Problems = append(rep.Problems, oneLine(err))
		return
	}
	digest := sha256.Sum256([]byte("brokerd config check"))
	for _, i := range infos {
		kr := keyReport{ID: i.ID, Kind: string(i.Kind), Alg: string(i.Algorithm)}
		signer, err := s.keys.Signer(context.Background(), i.ID)
		if err == nil {
			_, _, err = keys.SignDigest(context.Background(), signer, digest[:], "", crypto.SHA256)
		}
		if err != nil {
			kr.Error = oneLine(err)
			rep.Problems = append(rep.Problems, fmt.Sprintf("key %q: %s", i.ID, kr.Error))
		}
		rep.Keys = append(rep.Keys, kr)
	}
}

func printCheck(e *env, rep checkReport) {
	if rep.State != "" {
		fmt.Fprintf(e.stdout, "config %s: ok\ntpm %s: ok\nstate %s: ok\n", rep.Config, rep.TPM, rep.State)
	}
	for _, k := range rep.Keys {
		status := "ok"
		if k.Error != "" {
			status = "FAILED: " + k.Error
		}
		fmt.Fprintf(e.stdout, "key %s (%s, %s): %s\n", k.ID, k.Kind, k.Alg, status)
	}
	for _, p := range rep.Problems {
		fmt.Fprintf(e.stdout, "problem: %s\n", p)
	}
}
