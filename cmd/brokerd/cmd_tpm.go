package main

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"

	"github.com/brokerd/brokerd/admin"
	"github.com/brokerd/brokerd/internal/certs"
	"github.com/brokerd/brokerd/tpm"
)

func cmdTPMEK(ctx context.Context, e *env, args []string) error {
	fs := e.flags("tpm ek", "[--out FILE] [--alg ecc|rsa] [--cert-out FILE]",
		"Print this TPM's endorsement public key (PEM), to wrap keys for it elsewhere with\n"+
			"`brokerd key wrap`. --cert-out writes the EK certificate its maker stored in the TPM's\n"+
			"NV memory, if any, for `key wrap --ek-cert` to check against the maker's root CA.")
	out := e.path(fs, "out", admin.Write, "write to this `file` instead of standard output")
	certOut := e.path(fs, "cert-out", admin.Write, "write the EK certificate from the TPM's NV memory (PEM) to this `file`")
	alg := fs.String("alg", "ecc", "endorsement key `type`: ecc (P-256) or rsa (RSA-2048)")
	if err := e.parse(fs, args); err != nil {
		return err
	}
	parent := map[string]tpm.Parent{"ecc": tpm.ParentECCEK, "rsa": tpm.ParentRSAEK}[*alg]
	if parent == "" {
		return usagef("--alg %q: want ecc or rsa", *alg)
	}
	s, err := e.openState()
	if err != nil {
		return err
	}
	pub, err := s.TPM.EndorsementKey(ctx, parent)
	if err != nil {
		return err
	}
	var cert *x509.Certificate // read first: a failure writes nothing
	if *certOut != "" {
		if cert, err = s.TPM.EKCertificate(ctx, parent); err != nil {
			return err
		}
	}
	if err := e.writePublicKey(pub, *out); err != nil || cert == nil {
		return err
	}
	return e.writeOut(certs.EncodePEM(cert), *certOut)
}

func cmdTPMInfo(ctx context.Context, e *env, args []string) error {
	fs := e.flags("tpm info", "[--json] [--no-rates] [--rate-time DURATION]",
		"Describe the TPM: maker, firmware, algorithms, PCR banks, FIPS mode, lockout, handles, EK\n"+
			"certificates, signing rates (seconds of signatures), known-bad firmware and what to do.")
	asJSON := fs.Bool("json", false, "print JSON")
	noRates := fs.Bool("no-rates", false, "do not measure the signing rates")
	rateTime := fs.Duration("rate-time", tpm.DefaultRateTime, "how long to sign with each key type when measuring rates")
	if err := e.parse(fs, args); err != nil {
		return err
	}
	s, err := e.openState()
	if err != nil {
		return err
	}
	if *rateTime <= 0 {
		return usagef("--rate-time must be positive (use --no-rates to measure none)")
	}
	if *noRates {
		*rateTime = 0
	}
	rep, err := s.TPMInfo(ctx, *rateTime)
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(e.stdout, rep)
	}
	return rep.WriteText(e.stdout)
}

// writePublicKey writes pub as a PEM "PUBLIC KEY" to out, or to standard
// output when out is empty.
func (e *env) writePublicKey(pub crypto.PublicKey, out string) error {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return err
	}
	return e.writeOut(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), out)
}

// writeOut writes data to the caller's file out, or to standard output
// when out is empty.
func (e *env) writeOut(data []byte, out string) error {
	if out == "" {
		_, err := e.stdout.Write(data)
		return err
	}
	if err := e.fs().WriteFile(out, data, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "wrote %s\n", out)
	return nil
}
