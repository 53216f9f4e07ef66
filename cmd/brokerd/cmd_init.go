package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/brokerd/brokerd/config"
	"github.com/brokerd/brokerd/daemon"
	"github.com/brokerd/brokerd/tpm"
)

// initFlags are init's flags.
type initFlags struct {
	dir, addr, stateDir, adminSocket  *string
	tlsCert, tlsKey, clientCA, pwFile *string
	listen, healthListen, serverNames multiFlag
}

func cmdInit(ctx context.Context, e *env, args []string) error {
	fs := e.flags("init", "--dir DIR [flags]",
		"Write DIR/brokerd.toml, the state directory and an empty (deny-all) policy, and bind\n"+
			"the state to the TPM. Without TLS files, brokerd makes its own CA (key in the TPM),\n"+
			"a server certificate for --server-name (default: this host's name, localhost and\n"+
			"127.0.0.1; its key in the TPM too) and tls/ca.crt for clients; brokerd client sign\n"+
			"and client issue then make client certificates. With --tls-cert, --tls-key and\n"+
			"--client-ca (bring your own PKI, as the reference broker's openssl recipe makes it),\n"+
			"the server key is imported into the TPM and the certificates are copied to DIR/tls.\n"+
			"Refuses to overwrite an existing configuration, state or identity.")
	f := initFlags{}
	f.dir = fs.String("dir", "", "configuration `directory`; brokerd.toml is written there")
	f.addr = fs.String("tpm", tpm.DefaultAddress, "TPM `address`: device:PATH, swtpm:SOCKET or simulator (demo builds)")
	f.stateDir = fs.String("state-dir", "", "state `directory` (default DIR/state)")
	fs.Var(&f.listen, "listen", "API listen `address` host:port (repeatable; default "+strings.Join(config.Default().API.Listen, ", ")+")")
	fs.Var(&f.healthListen, "health-listen", "plain-HTTP /health listen `address` (repeatable; default none)")
	fs.Var(&f.serverNames, "server-name", "DNS `name` or IP address for the server certificate of brokerd's CA (repeatable; default: hostname, localhost, 127.0.0.1)")
	f.adminSocket = fs.String("admin-socket", "", "`path` of the admin socket (default "+config.Default().Admin.Socket+")")
	f.tlsCert = fs.String("tls-cert", "", "server certificate `file` (PEM, leaf first, chain may follow)")
	f.tlsKey = fs.String("tls-key", "", "server private key `file` (PEM); imported into the TPM")
	f.clientCA = fs.String("client-ca", "", "`file` of CA certificates that issue client certificates")
	f.pwFile = fs.String("tls-key-password-file", "", "`file` holding the server key's password, if it is encrypted")
	if err := e.parse(fs, args); err != nil {
		return err
	}
	if err := required(fs, "dir"); err != nil {
		return err
	}
	byo := *f.tlsCert != "" || *f.tlsKey != "" || *f.clientCA != ""
	if byo && (*f.tlsCert == "" || *f.tlsKey == "" || *f.clientCA == "") {
		return usagef("--tls-cert, --tls-key and --client-ca go together")
	}
	if len(f.serverNames) > 0 && byo {
		return usagef("--server-name names the built-in CA's server certificate; with --tls-cert it has no use")
	}
	cfgPath, cfg, err := f.config()
	if err != nil {
		return err
	}
	var tlsIn *daemon.TLSFiles
	if byo {
		if tlsIn, err = daemon.ReadTLSFiles(*f.tlsCert, *f.tlsKey, *f.clientCA, e.password(*f.tlsKey, *f.pwFile)); err != nil {
			return err
		}
	}
	srk, err := daemon.Init(ctx, cfgPath, cfg, tlsIn, e.logger())
	if err != nil {
		return err
	}
	printInit(e, cfgPath, cfg, srk, tlsIn == nil)
	return nil
}

// config returns the configuration init writes, and where.
func (f *initFlags) config() (string, *config.Config, error) {
	cfgPath, err := filepath.Abs(filepath.Join(*f.dir, "brokerd.toml"))
	if err != nil {
		return "", nil, err
	}
	cfg := config.Default()
	cfg.TPM.Address = *f.addr
	cfg.StateDir = *f.stateDir
	if cfg.StateDir == "" {
		cfg.StateDir = filepath.Join(filepath.Dir(cfgPath), "state")
	}
	if cfg.StateDir, err = filepath.Abs(cfg.StateDir); err != nil {
		return "", nil, err
	}
	if len(f.listen) > 0 {
		cfg.API.Listen = f.listen
	}
	cfg.Health.Listen = append(cfg.Health.Listen, f.healthListen...)
	if *f.adminSocket != "" {
		if cfg.Admin.Socket, err = filepath.Abs(*f.adminSocket); err != nil {
			return "", nil, err
		}
	}
	if *f.tlsCert == "" {
		cfg.PKI.ServerNames = f.serverNames
		if len(f.serverNames) == 0 {
			cfg.PKI.ServerNames = defaultServerNames()
		}
	}
	return cfgPath, cfg, nil
}

func printInit(e *env, cfgPath string, cfg *config.Config, srk []byte, ownCA bool) {
	fmt.Fprintf(e.stdout, "wrote %s\nstate in %s, bound to TPM %s (storage root key %s)\n",
		cfgPath, cfg.StateDir, cfg.TPM.Address, hex.EncodeToString(srk)[:16])
	if !ownCA {
		fmt.Fprintf(e.stdout, "next: export %s=%s; brokerd key import / key create; brokerd policy allow; brokerd serve\n", config.EnvPath, cfgPath)
		return
	}
	dir := filepath.Join(filepath.Dir(cfgPath), "tls")
	fmt.Fprintf(e.stdout, "brokerd's CA (key in the TPM) made %s for %s; clients verify it with %s\n",
		filepath.Join(dir, "server.crt"), strings.Join(cfg.PKI.ServerNames, ", "), filepath.Join(dir, "ca.crt"))
	fmt.Fprintf(e.stdout, "next: export %s=%s; brokerd key import / key create; brokerd client issue --name NAME --out DIR;\n"+
		"      brokerd policy allow --name RULE --cn NAME --keys KEY --ops sign; brokerd serve\n", config.EnvPath, cfgPath)
}

// defaultServerNames are this host's name, localhost and 127.0.0.1.
func defaultServerNames() []string {
	names := []string{"localhost", "127.0.0.1"}
	if h, err := os.Hostname(); err == nil && h != "" && h != "localhost" {
		names = append([]string{strings.ToLower(h)}, names...)
	}
	return names
}

// checkReport is what `config check --json` prints.
type checkReport struct {
	Config   string            `json:"config"`
	TPM      string            `json:"tpm"`
	State    string            `json:"state"`
	Keys     []daemon.KeyCheck `json:"keys"`
	Problems []string          `json:"problems"`
}

func cmdConfigCheck(ctx context.Context, e *env, args []string) error {
	fs := e.flags("config check", "[--json]",
		"Validate the configuration, reach the TPM, open the state and sign a test digest\n"+
			"with every key. Names every problem found.")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := e.parse(fs, args); err != nil {
		return err
	}
	rep := checkReport{Config: config.Path(e.configFlag, e.getenv), Keys: []daemon.KeyCheck{}, Problems: []string{}}
	if cfg := e.checkConfig(&rep); cfg != nil {
		e.checkState(ctx, cfg, &rep)
	}
	if *asJSON {
		if err := writeJSON(e.stdout, rep); err != nil {
			return err
		}
	} else {
		printCheck(e, rep)
	}
	switch n := len(rep.Problems); n {
	case 0:
		return nil
	case 1:
		return fmt.Errorf("1 problem found")
	default:
		return fmt.Errorf("%d problems found", n)
	}
}

// checkConfig reads the configuration (inside the daemon: its own, and
// the file, which may have changed since it started).
func (e *env) checkConfig(rep *checkReport) *config.Config {
	if e.daemon != nil {
		cfg := e.daemon.Config()
		rep.Config = cfg.File()
		if _, err := config.Load(rep.Config); err != nil {
			rep.Problems = append(rep.Problems, problems(err)...)
			rep.Problems = append(rep.Problems, "the daemon runs with the configuration it started with")
		}
		return cfg
	}
	cfg, err := config.Load(rep.Config)
	if err != nil {
		rep.Problems = append(rep.Problems, problems(err)...)
	}
	return cfg
}

// checkState opens the state and test-signs with every key.
func (e *env) checkState(ctx context.Context, cfg *config.Config, rep *checkReport) {
	s, err := e.openState()
	if err != nil {
		rep.Problems = append(rep.Problems, err.Error())
		return
	}
	defer s.Close()
	rep.TPM, rep.State = cfg.TPM.Address, cfg.StatePath()
	checks, err := s.CheckKeys(ctx)
	if err != nil {
		rep.Problems = append(rep.Problems, err.Error())
	}
	for _, k := range checks {
		if k.Error != "" {
			rep.Problems = append(rep.Problems, fmt.Sprintf("key %q: %s", k.ID, k.Error))
		}
	}
	rep.Keys = append(rep.Keys, checks...)
}

// problems splits a configuration error into the problems it lists.
func problems(err error) []string {
	var ce *config.Error
	if errors.As(err, &ce) {
		return ce.Problems
	}
	return []string{err.Error()}
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
