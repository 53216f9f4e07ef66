package main

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/brokerd/brokerd/config"
	"github.com/brokerd/brokerd/internal/certs"
	"github.com/brokerd/brokerd/keys"
	"github.com/brokerd/brokerd/policy"
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
	dir := fs.String("dir", "", "configuration `directory`; brokerd.toml is written there")
	addr := fs.String("tpm", tpm.DefaultAddress, "TPM `address`: device:PATH, swtpm:SOCKET or simulator (demo builds)")
	stateDir := fs.String("state-dir", "", "state `directory` (default DIR/state)")
	var listen, healthListen, serverNames multiFlag
	fs.Var(&listen, "listen", "API listen `address` host:port (repeatable; default 0.0.0.0:8443)")
	fs.Var(&healthListen, "health-listen", "plain-HTTP /health listen `address` (repeatable; default none)")
	fs.Var(&serverNames, "server-name", "DNS `name` or IP address for the server certificate of brokerd's CA (repeatable; default: hostname, localhost, 127.0.0.1)")
	adminSocket := fs.String("admin-socket", "", "`path` of the admin socket (default /run/brokerd/admin.sock)")
	tlsCert := fs.String("tls-cert", "", "server certificate `file` (PEM, leaf first, chain may follow)")
	tlsKey := fs.String("tls-key", "", "server private key `file` (PEM); imported into the TPM")
	clientCA := fs.String("client-ca", "", "`file` of CA certificates that issue client certificates")
	pwFile := fs.String("tls-key-password-file", "", "`file` holding the server key's password, if it is encrypted")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := required(fs, "dir"); err != nil {
		return err
	}
	byo := *tlsCert != "" || *tlsKey != "" || *clientCA != ""
	if byo && (*tlsCert == "" || *tlsKey == "" || *clientCA == "") {
		return usagef("--tls-cert, --tls-key and --client-ca go together")
	}
	if len(serverNames) > 0 && byo {
		return usagef("--server-name names the built-in CA's server certificate; with --tls-cert it has no use")
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
	if len(listen) > 0 {
		cfg.API.Listen = listen
	}
	cfg.Health.Listen = append(cfg.Health.Listen, healthListen...)
	if *adminSocket != "" {
		if cfg.Admin.Socket, err = filepath.Abs(*adminSocket); err != nil {
			return err
		}
	}
	if !byo {
		cfg.PKI.ServerNames = serverNames
		if len(serverNames) == 0 {
			cfg.PKI.ServerNames = defaultServerNames()
		}
	}
	var tlsIn *tlsFiles
	if byo {
		if tlsIn, err = readTLSFiles(*tlsCert, *tlsKey, *clientCA, e.password(*tlsKey, *pwFile)); err != nil {
			return err
		}
	}
	srk, err := initialize(ctx, cfgPath, cfg, tlsIn, e.logger())
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "wrote %s\nstate in %s, bound to TPM %s (storage root key %s)\n",
		cfgPath, cfg.StateDir, cfg.TPM.Address, hex.EncodeToString(srk)[:16])
	if tlsIn == nil {
		fmt.Fprintf(e.stdout, "brokerd's CA (key in the TPM) made %s for %s; clients verify it with %s\n",
			filepath.Join(filepath.Dir(cfgPath), "tls", "server.crt"), strings.Join(cfg.PKI.ServerNames, ", "),
			filepath.Join(filepath.Dir(cfgPath), "tls", "ca.crt"))
		fmt.Fprintf(e.stdout, "next: export %s=%s; brokerd key import / key create; brokerd client issue --name NAME --out DIR;\n"+
			"      brokerd policy allow --name RULE --cn NAME --keys KEY --ops sign; brokerd serve\n", config.EnvPath, cfgPath)
		return nil
	}
	fmt.Fprintf(e.stdout, "next: export %s=%s; brokerd key import / key create; brokerd policy allow; brokerd serve\n", config.EnvPath, cfgPath)
	return nil
}

// tlsFiles is bring-your-own TLS material, read and checked before
// anything is written.
type tlsFiles struct {
	chain []*x509.Certificate
	key   crypto.Signer
	cas   []*x509.Certificate
}

func readTLSFiles(certFile, keyFile, caFile string, pw keys.PasswordFunc) (*tlsFiles, error) {
	chain, err := certs.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, err
	}
	key, err := keys.ParsePrivateKeyPEM(data, pw)
	clear(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyFile, err)
	}
	if pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(chain[0].PublicKey) {
		return nil, fmt.Errorf("%s is not the key of the certificate in %s", keyFile, certFile)
	}
	cas, err := certs.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	return &tlsFiles{chain: chain, key: key, cas: cas}, nil
}

// initialize writes a new configuration and state bound to the TPM, and
// returns the TPM's storage root key name.
func initialize(ctx context.Context, cfgPath string, cfg *config.Config, tlsIn *tlsFiles, log *slog.Logger) ([]byte, error) {
	if a, err := tpm.ParseAddress(cfg.TPM.Address); err == nil && a.Kind == tpm.KindSimulator && cfg.TPM.SimulatorSeed == 0 {
		var b [8]byte
		rand.Read(b[:])
		cfg.TPM.SimulatorSeed = int64(binary.LittleEndian.Uint64(b[:])>>1) | 1
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfgDir := filepath.Dir(cfgPath)
	tlsDir := filepath.Join(cfgDir, "tls")
	policyFile := filepath.Join(cfgDir, cfg.Policy.File)
	// Everything init writes must be new; on failure it is all removed,
	// so that init can simply be run again.
	written := []string{cfgPath, statePath(cfg), policyFile}
	for _, f := range []string{"server.crt", "ca.crt", "client-ca.pem", "crl.pem"} {
		written = append(written, filepath.Join(tlsDir, f))
	}
	for _, p := range written {
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
	err = ensureAuditKey(ctx, s)
	if err == nil {
		err = installTLS(ctx, s, cfg, tlsDir, tlsIn)
	}
	s.Close()
	if err == nil {
		err = (&policy.Policy{}).Save(policyFile)
	}
	if err == nil {
		err = cfg.WriteNew(cfgPath)
	}
	if err != nil {
		for _, p := range written {
			os.Remove(p)
		}
		return nil, err
	}
	return srk, nil
}

// installTLS imports the server key into the TPM and writes the server
// chain and client CA files; without TLS files it makes brokerd's CA, a
// server key and certificate, the CA certificate for clients and the CRL.
func installTLS(ctx context.Context, s *state, cfg *config.Config, dir string, in *tlsFiles) error {
	if in == nil {
		return installOwnCA(ctx, s, cfg, dir)
	}
	if _, err := s.keys.Import(ctx, cfg.API.TLSKey, in.key, keys.ImportOptions{Chain: in.chain, Internal: true}); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "server.crt"), certs.EncodePEM(in.chain...), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "client-ca.pem"), certs.EncodePEM(in.cas...), 0o644)
}

// installOwnCA makes brokerd's CA and the server certificate it issues.
func installOwnCA(ctx context.Context, s *state, cfg *config.Config, dir string) error {
	// The configuration being written keeps relative paths; these calls
	// need them resolved.
	resolved := *cfg
	resolved.API.TLSCert, resolved.API.ClientCA = filepath.Join(dir, "server.crt"), filepath.Join(dir, "client-ca.pem")
	rs := *s
	rs.cfg = &resolved
	s = &rs
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	now := time.Now()
	ca, err := createCA(ctx, s, now)
	if err != nil {
		return err
	}
	if _, _, err := s.keys.Create(ctx, cfg.API.TLSKey, tpm.P256, keys.CreateOptions{Internal: true}); err != nil {
		return err
	}
	if _, err := issueServerCert(ctx, s, ca, now); err != nil {
		return err
	}
	for _, name := range []string{"ca.crt", "client-ca.pem"} {
		if err := os.WriteFile(filepath.Join(dir, name), certs.EncodePEM(ca.Cert), 0o644); err != nil {
			return err
		}
	}
	return writeCRL(s, ca, now)
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
	var cfg *config.Config
	var err error
	if e.daemon != nil {
		// Inside the running daemon: its configuration, its state. The
		// file may have changed since it started: check that too.
		rep.Config = e.daemon.s.cfg.File()
		if _, err := config.Load(rep.Config); err != nil {
			fail(fmt.Errorf("%w (the daemon runs with the version it started with)", err))
		}
		cfg = e.daemon.s.cfg
	} else if cfg, err = config.Load(path); err != nil {
		fail(err)
	}
	if cfg != nil {
		s, err := e.openState()
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
