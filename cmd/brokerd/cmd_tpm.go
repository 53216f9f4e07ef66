package main

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"

	"github.com/brokerd/brokerd/admin"
	"github.com/brokerd/brokerd/tpm"
)

func cmdTPMEK(ctx context.Context, e *env, args []string) error {
	fs := e.flags("tpm ek", "[--out FILE] [--alg ecc|rsa]",
		"Print this TPM's endorsement public key (PEM), to wrap keys for it elsewhere with\n"+
			"`brokerd key wrap`. Compare it with the TPM vendor's EK certificate before trusting it.")
	out := e.path(fs, "out", admin.Write, "write to this `file` instead of standard output")
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
	return e.writePublicKey(pub, *out)
}

// writePublicKey writes pub as a PEM "PUBLIC KEY" to out, or to standard
// output when out is empty.
func (e *env) writePublicKey(pub crypto.PublicKey, out string) error {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return err
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	if out == "" {
		_, err = e.stdout.Write(data)
		return err
	}
	if err := e.fs().WriteFile(out, data, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "wrote %s\n", out)
	return nil
}
