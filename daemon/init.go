package daemon

import (
	"cmp"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/brokerd/brokerd/config"
	"github.com/brokerd/brokerd/internal/certs"
	"github.com/brokerd/brokerd/internal/files"
	"github.com/brokerd/brokerd/keys"
	"github.com/brokerd/brokerd/policy"
	"github.com/brokerd/brokerd/tpm"
)

// TLSFiles is bring-your-own TLS material, read and checked before
// anything is written.
type TLSFiles struct {
	Chain     []*x509.Certificate // the server's, leaf first
	Key       crypto.Signer       // the leaf's key
	ClientCAs []*x509.Certificate
}

// ReadTLSFiles reads a server certificate chain, its key (pw gives the
// password of an encrypted one) and the client CAs, and checks that the
// key is the certificate's.
func ReadTLSFiles(certFile, keyFile, caFile string, pw keys.PasswordFunc) (*TLSFiles, error) {
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
	return &TLSFiles{Chain: chain, Key: key, ClientCAs: cas}, nil
}

// InitOptions are the choices of `brokerd init`; zero fields take the
// defaults.
type InitOptions struct {
	// Dir is the configuration directory: brokerd.toml is written there.
	Dir string
	// TPM is the TPM's address (default tpm.DefaultAddress).
	TPM string
	// StateDir is the state directory (default Dir/state).
	StateDir string
	// Listen, when set, replaces the default API listen addresses.
	Listen []string
	// HealthListen are plain-HTTP /health listen addresses.
	HealthListen []string
	// AdminSocket is the admin socket's path (default the configuration's).
	AdminSocket string
	// ServerNames are the names of the server certificate of brokerd's own
	// CA (default: this host's name, localhost, 127.0.0.1); OwnCA only.
	ServerNames []string
	// OwnCA: brokerd makes its own CA (no TLS files of the operator's).
	OwnCA bool
}

// InitConfig returns the configuration Init writes for o, and where: the
// absolute path of DIR/brokerd.toml.
func InitConfig(o InitOptions) (string, *config.Config, error) {
	cfgPath, err := filepath.Abs(filepath.Join(o.Dir, "brokerd.toml"))
	if err != nil {
		return "", nil, fmt.Errorf("init: %w", err)
	}
	cfg := config.Default()
	if o.TPM != "" {
		cfg.TPM.Address = o.TPM
	}
	cfg.StateDir = cmp.Or(o.StateDir, filepath.Join(filepath.Dir(cfgPath), "state"))
	if len(o.Listen) > 0 {
		cfg.API.Listen = o.Listen
	}
	cfg.Health.Listen = append(cfg.Health.Listen, o.HealthListen...)
	cfg.Admin.Socket = cmp.Or(o.AdminSocket, cfg.Admin.Socket)
	for _, p := range []*string{&cfg.StateDir, &cfg.Admin.Socket} {
		if *p, err = filepath.Abs(*p); err != nil {
			return "", nil, fmt.Errorf("init: %w", err)
		}
	}
	if o.OwnCA {
		cfg.PKI.ServerNames = o.ServerNames
		if len(o.ServerNames) == 0 {
			cfg.PKI.ServerNames = defaultServerNames()
		}
	}
	return cfgPath, cfg, nil
}

// defaultServerNames are this host's name, localhost and 127.0.0.1.
func defaultServerNames() []string {
	names := []string{"localhost", "127.0.0.1"}
	if h, err := os.Hostname(); err == nil && h != "" && h != "localhost" {
		names = append([]string{strings.ToLower(h)}, names...)
	}
	return names
}

// InitReport says what Init bound the state to.
type InitReport struct {
	// SRK is the Name of the TPM's storage root key.
	SRK []byte
	// SRKPersistence says, for an operator, whether the storage root key
	// is persistent at 0x81000001 (see tpm.Device.PersistSRK).
	SRKPersistence string
}

// Init writes a new configuration at cfgPath and a state bound to the TPM:
// the audit key, and either brokerd's own CA with a server certificate
// (tlsIn nil) or the given TLS material, and an empty (deny-all) policy.
// It makes the storage root key persistent when the TPM allows. It
// refuses to overwrite anything; on failure it removes what it wrote, so
// that it can simply be run again.
func Init(ctx context.Context, cfgPath string, cfg *config.Config, tlsIn *TLSFiles, log *slog.Logger) (InitReport, error) {
	if a, err := tpm.ParseAddress(cfg.TPM.Address); err == nil && a.Kind == tpm.KindSimulator && cfg.TPM.SimulatorSeed == 0 {
		var b [8]byte
		rand.Read(b[:])
		cfg.TPM.SimulatorSeed = int64(binary.LittleEndian.Uint64(b[:])>>1) | 1
	}
	if err := cfg.Validate(); err != nil {
		return InitReport{}, err
	}
	tlsDir := filepath.Join(filepath.Dir(cfgPath), "tls")
	policyFile := filepath.Join(filepath.Dir(cfgPath), cfg.Policy.File)
	written := []string{cfgPath, cfg.StatePath(), policyFile}
	for _, f := range []string{"server.crt", "ca.crt", "client-ca.pem", "crl.pem"} {
		written = append(written, filepath.Join(tlsDir, f))
	}
	if err := mustBeNew(written); err != nil {
		return InitReport{}, err
	}
	rep, err := initState(ctx, cfg, tlsDir, tlsIn, log)
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
		return InitReport{}, err
	}
	return rep, nil
}

// mustBeNew fails when any of paths exists.
func mustBeNew(paths []string) error {
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			return fmt.Errorf("%s exists: refusing to overwrite an existing identity", p)
		} else if !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

// initState makes the state file, the audit key and the TLS identity.
func initState(ctx context.Context, cfg *config.Config, tlsDir string, tlsIn *TLSFiles, log *slog.Logger) (InitReport, error) {
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return InitReport{}, err
	}
	// The configuration being written keeps relative paths; the state
	// works with them resolved.
	resolved := *cfg
	resolved.API.TLSCert, resolved.API.ClientCA = filepath.Join(tlsDir, "server.crt"), filepath.Join(tlsDir, "client-ca.pem")
	s, err := OpenState(&resolved, log)
	if err != nil {
		return InitReport{}, err
	}
	defer s.Close()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s.warnFirmware(ctx, log)
	rep := InitReport{SRKPersistence: s.persistSRK(ctx, log)}
	if _, err := s.AuditKey(ctx); err != nil {
		return InitReport{}, err
	}
	s.guardLockout(ctx, log)
	if err := os.MkdirAll(tlsDir, 0o755); err != nil {
		return InitReport{}, err
	}
	if tlsIn == nil {
		err = s.installOwnCA(ctx, tlsDir)
	} else {
		err = s.installTLS(ctx, tlsDir, tlsIn)
	}
	if err != nil {
		return InitReport{}, err
	}
	rep.SRK = s.TPM.SRKName()
	return rep, nil
}

// persistSRK makes the TPM's storage root key persistent if it can, and
// says what it found or did. A TPM that refuses is no reason to stop: the
// key is made as a transient object then, as before.
func (s *State) persistSRK(ctx context.Context, log *slog.Logger) string {
	p, err := s.TPM.PersistSRK(ctx)
	if err != nil {
		log.Warn("tpm: the storage root key stays transient", "err", err)
		return "the storage root key stays transient: " + err.Error()
	}
	return p.String()
}

// installTLS imports the server key into the TPM and writes the server
// chain and the client CAs.
func (s *State) installTLS(ctx context.Context, dir string, in *TLSFiles) error {
	if _, err := s.Keys.Import(ctx, s.Config.API.TLSKey, in.Key, keys.ImportOptions{Chain: in.Chain, Internal: true}); err != nil {
		return err
	}
	if err := files.Replace(filepath.Join(dir, "server.crt"), certs.EncodePEM(in.Chain...), 0o644); err != nil {
		return err
	}
	return files.Replace(filepath.Join(dir, "client-ca.pem"), certs.EncodePEM(in.ClientCAs...), 0o644)
}

// installOwnCA makes brokerd's CA, a server key in the TPM and the
// certificate the CA issues for it, the CA certificate for clients and
// the CRL.
func (s *State) installOwnCA(ctx context.Context, dir string) error {
	now := time.Now()
	ca, err := s.PKI.CreateCA(ctx, now)
	if err != nil {
		return err
	}
	if _, _, err := s.Keys.Create(ctx, s.Config.API.TLSKey, tpm.P256, keys.CreateOptions{Internal: true}); err != nil {
		return err
	}
	if _, err := s.PKI.IssueServerCert(ctx, ca, now); err != nil {
		return err
	}
	for _, name := range []string{"ca.crt", "client-ca.pem"} {
		if err := files.Replace(filepath.Join(dir, name), certs.EncodePEM(ca.Cert), 0o644); err != nil {
			return err
		}
	}
	return s.PKI.WriteCRL(ca, now)
}
