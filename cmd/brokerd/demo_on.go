//go:build simulator

package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/brokerd/brokerd/config"
	"github.com/brokerd/brokerd/internal/certs"
	"github.com/brokerd/brokerd/keys"
	"github.com/brokerd/brokerd/policy"
	"github.com/brokerd/brokerd/store"
	"github.com/brokerd/brokerd/tpm"
)

// demoCommands adds `brokerd demo` to simulator builds.
func demoCommands() map[string]command {
	return map[string]command{"demo": {"run brokerd on the embedded TPM simulator (demo builds only)", cmdDemo}}
}

// demoKeys are the keys the demo makes inside the TPM on first run.
var demoKeys = []struct {
	id  string
	alg tpm.Algorithm
}{{"qseal.key", tpm.RSA2048}, {"qwac.key", tpm.P256}}

func cmdDemo(ctx context.Context, e *env, args []string) error {
	fs := e.flags("demo", "[--dir DIR] [--listen ADDR]",
		"Run brokerd for real on the in-process TPM simulator. The first run writes a\n"+
			"configuration and state in DIR, a demo CA, a server certificate for a key made\n"+
			"inside the TPM, a client certificate, two signing keys and a policy for the client;\n"+
			"every run serves the API and prints curl commands to try. Stop with Ctrl-C.")
	dir := fs.String("dir", "demo", "demo `directory`")
	listen := fs.String("listen", "127.0.0.1:8443", "API listen `address`")
	if err := parse(fs, args); err != nil {
		return err
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	cfgPath := filepath.Join(abs, "brokerd.toml")
	if _, err := os.Stat(cfgPath); errors.Is(err, os.ErrNotExist) {
		if err := demoSetup(ctx, abs, cfgPath, e); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "initialised %s on the TPM simulator\n", abs)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	cfg.API.Listen = []string{*listen}
	if err := resumeSimulator(ctx, cfg); err != nil {
		return err
	}
	return serve(ctx, cfg, cfg.Logger(e.stderr), func(addrs []string) { printDemo(e.stdout, abs, addrs[0]) })
}

// resumeSimulator brings the simulator's reset counter up to where the
// audit log last saw it. The simulator keeps nothing between runs, so each
// run starts as a TPM that was never reset, and the audit log would rightly
// report a TPM whose state went back; a hardware TPM keeps the counter in
// NV memory. Every start of the simulator counts as one reset (its clock
// starts at the wall clock's, see package tpm).
func resumeSimulator(ctx context.Context, cfg *config.Config) error {
	st, err := store.Open(statePath(cfg), store.Options{ReadOnly: true})
	if err != nil {
		return err
	}
	last, err := st.LastCheckpoint()
	st.Close()
	if err != nil || last == nil {
		return err
	}
	for range 100000 {
		dev, err := tpm.Open(cfg.TPMConfig(), nil)
		if err != nil {
			return err
		}
		c, err := dev.ReadClock(ctx)
		dev.Close()
		if err != nil {
			return err
		}
		if c.ResetCount >= last.ResetCount { // serve's start is one more
			return nil
		}
	}
	return fmt.Errorf("demo: the simulator cannot reach the reset counter %d of the audit log", last.ResetCount)
}

// demoSetup writes the demo's configuration, PKI, keys and policy.
func demoSetup(ctx context.Context, dir, cfgPath string, e *env) error {
	cfg := config.Default()
	cfg.TPM.Address = tpm.KindSimulator
	cfg.StateDir = filepath.Join(dir, "state")
	if _, err := initialize(ctx, cfgPath, cfg, nil, e.logger()); err != nil {
		return err
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
		if _, _, err := s.keys.Create(ctx, k.id, k.alg, keys.CreateOptions{}); err != nil {
			return err
		}
	}
	// A demo CA in software: on an appliance brokerd's own CA key lives in
	// the TPM, or you bring your own PKI.
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "brokerd demo CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(2, 0, 0),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return err
	}
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(serial int64, tmpl *x509.Certificate, pub any) (*x509.Certificate, error) {
		tmpl.SerialNumber, tmpl.NotBefore, tmpl.NotAfter = big.NewInt(serial), time.Now().Add(-time.Hour), time.Now().AddDate(1, 0, 0)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caKey)
		if err != nil {
			return nil, err
		}
		return x509.ParseCertificate(der)
	}
	// The server key is made inside the TPM; the CA certifies its CSR.
	_, csrDER, err := s.keys.Create(ctx, cfg.API.TLSKey, tpm.P256, keys.CreateOptions{Internal: true,
		CSR: &x509.CertificateRequest{Subject: pkix.Name{CommonName: "localhost"}}})
	if err != nil {
		return err
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return err
	}
	server, err := issue(2, &x509.Certificate{Subject: csr.Subject, DNSNames: []string{"localhost"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, csr.PublicKey)
	if err != nil {
		return err
	}
	if _, err := s.keys.AttachCert(cfg.API.TLSKey, []*x509.Certificate{server}, nil); err != nil {
		return err
	}
	clientKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	client, err := issue(3, &x509.Certificate{Subject: pkix.Name{CommonName: "demo-client"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, clientKey.Public())
	if err != nil {
		return err
	}
	clientDER, err := x509.MarshalPKCS8PrivateKey(clientKey)
	if err != nil {
		return err
	}
	files := map[string][]byte{
		cfg.API.TLSCert:                            certs.EncodePEM(server),
		cfg.API.ClientCA:                           certs.EncodePEM(ca),
		filepath.Join(dir, "tls", "ca.crt"):        certs.EncodePEM(ca),
		filepath.Join(dir, "client", "client.crt"): certs.EncodePEM(client),
		filepath.Join(dir, "client", "client.key"): pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: clientDER}),
	}
	for path, data := range files {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return err
		}
	}
	p := &policy.Policy{}
	if err := p.Put(policy.Rule{Name: "demo-client", CN: "demo-client", Keys: []string{"*"}, Ops: []string{"*"}}); err != nil {
		return err
	}
	return p.Save(cfg.Policy.File)
}

// printDemo prints curl commands that work when pasted.
func printDemo(w io.Writer, dir, addr string) {
	_, port, _ := net.SplitHostPort(addr)
	base := "https://localhost:" + port
	self, err := os.Executable()
	if err != nil {
		self = "brokerd"
	}
	q := func(p string) string { return "'" + strings.ReplaceAll(p, "'", `'\''`) + "'" }
	auth := fmt.Sprintf("-sS --cacert %s --cert %s --key %s", q(filepath.Join(dir, "tls", "ca.crt")),
		q(filepath.Join(dir, "client", "client.crt")), q(filepath.Join(dir, "client", "client.key")))
	sign := func(key, extra string) string {
		return fmt.Sprintf(`  curl %s -H 'Content-Type: application/json' -d '{"params":{"data":"a string to sign","key_id":"%s"%s}}' %s/sign`, auth, key, extra, base)
	}
	fmt.Fprintf(w, `
brokerd is serving on %s with keys inside the TPM simulator (state in %s).
Try these in another terminal:

  curl %s %s/
%s
%s
%s
  curl %s %s/keys
  curl -sS --cacert %s %s/health

Stop with Ctrl-C. Every request is in the audit log; after stopping, see it with

  %s --config %s audit export
  %s --config %s audit verify
`, base, dir, auth, base, sign("qseal.key", ""), sign("qseal.key", `,"crypto_algorithm":"PS","hash_algorithm":"SHA512"`),
		sign("qwac.key", ""), auth, base, q(filepath.Join(dir, "tls", "ca.crt")), base,
		q(self), q(filepath.Join(dir, "brokerd.toml")), q(self), q(filepath.Join(dir, "brokerd.toml")))
}
