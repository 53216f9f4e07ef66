package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/brokerd/brokerd/config"
	"github.com/brokerd/brokerd/daemon"
	"github.com/brokerd/brokerd/tpm"
)

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
	var o daemon.InitOptions
	fs.StringVar(&o.Dir, "dir", "", "configuration `directory`; brokerd.toml is written there")
	fs.StringVar(&o.TPM, "tpm", tpm.DefaultAddress, "TPM `address`: device:PATH, swtpm:SOCKET or simulator (demo builds)")
	fs.StringVar(&o.StateDir, "state-dir", "", "state `directory` (default DIR/state)")
	fs.Var((*multiFlag)(&o.Listen), "listen", "API listen `address` host:port (repeatable; default "+strings.Join(config.Default().API.Listen, ", ")+")")
	fs.Var((*multiFlag)(&o.HealthListen), "health-listen", "plain-HTTP /health listen `address` (repeatable; default none)")
	fs.Var((*multiFlag)(&o.ServerNames), "server-name", "DNS `name` or IP address for the server certificate of brokerd's CA (repeatable; default: hostname, localhost, 127.0.0.1)")
	fs.StringVar(&o.AdminSocket, "admin-socket", "", "`path` of the admin socket (default "+config.Default().Admin.Socket+")")
	tlsCert := fs.String("tls-cert", "", "server certificate `file` (PEM, leaf first, chain may follow)")
	tlsKey := fs.String("tls-key", "", "server private key `file` (PEM); imported into the TPM")
	clientCA := fs.String("client-ca", "", "`file` of CA certificates that issue client certificates")
	pwFile := fs.String("tls-key-password-file", "", "`file` holding the server key's password, if it is encrypted")
	if err := e.parse(fs, args, "dir"); err != nil {
		return err
	}
	o.OwnCA = *tlsCert == "" && *tlsKey == "" && *clientCA == ""
	if !o.OwnCA && (*tlsCert == "" || *tlsKey == "" || *clientCA == "") {
		return usagef("--tls-cert, --tls-key and --client-ca go together")
	}
	if len(o.ServerNames) > 0 && !o.OwnCA {
		return usagef("--server-name names the built-in CA's server certificate; with --tls-cert it has no use")
	}
	cfgPath, cfg, err := daemon.InitConfig(o)
	if err != nil {
		return err
	}
	var tlsIn *daemon.TLSFiles
	if !o.OwnCA {
		if tlsIn, err = daemon.ReadTLSFiles(*tlsCert, *tlsKey, *clientCA, e.keyFiles().Password(*tlsKey, *pwFile, "--tls-key-password-file")); err != nil {
			return err
		}
	}
	rep, err := daemon.Init(ctx, cfgPath, cfg, tlsIn, e.logger())
	if err != nil {
		return err
	}
	printInit(e, cfgPath, cfg, rep, o.OwnCA)
	return nil
}

func printInit(e *env, cfgPath string, cfg *config.Config, rep daemon.InitReport, ownCA bool) {
	fmt.Fprintf(e.stdout, "wrote %s\nstate in %s, bound to TPM %s (storage root key %s)\n%s\n",
		cfgPath, cfg.StateDir, cfg.TPM.Address, hex.EncodeToString(rep.SRK)[:16], rep.SRKPersistence)
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

func cmdConfigCheck(ctx context.Context, e *env, args []string) error {
	fs := e.flags("config check", "[--json]",
		"Validate the configuration, reach the TPM, open the state and sign a test digest\n"+
			"with every key. Names every problem found.")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := e.parse(fs, args); err != nil {
		return err
	}
	rep := daemon.Check(ctx, config.Path(e.configFlag, e.getenv), e.daemon, e.logger())
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
		return errors.New("1 problem found")
	default:
		return fmt.Errorf("%d problems found", n)
	}
}

func printCheck(e *env, rep daemon.CheckReport) {
	if rep.State != "" {
		fmt.Fprintf(e.stdout, "config %s: ok\ntpm %s: ok\nstate %s: ok\n", rep.Config, rep.TPM, rep.State)
	}
	for _, k := range rep.Keys {
		status := "ok"
		if k.Error != "" {
			status = "FAILED: " + k.Error
		}
		fmt.Fprintf(e.stdout, "key %s (%s, %s, purpose %s): %s\n", k.ID, k.Kind, k.Alg, k.Purpose, status)
	}
	for _, w := range rep.Warnings {
		fmt.Fprintf(e.stdout, "warning: %s\n", w)
	}
	for _, p := range rep.Problems {
		fmt.Fprintf(e.stdout, "problem: %s\n", p)
	}
}
