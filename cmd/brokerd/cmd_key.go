package main

import (
	"cmp"
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/brokerd/brokerd/admin"
	"github.com/brokerd/brokerd/daemon"
	"github.com/brokerd/brokerd/internal/certs"
	"github.com/brokerd/brokerd/internal/dn"
	"github.com/brokerd/brokerd/keys"
	"github.com/brokerd/brokerd/tpm"
)

// maxSignInput bounds what `key sign` reads from standard input, as the API
// bounds a request body.
const maxSignInput = 1 << 20

func cmdKeyCreate(ctx context.Context, e *env, args []string) error {
	fs := e.flags("key create", "--id ID --alg rsa2048|rsa3072|p256|p384 [flags]",
		"Generate a key inside the TPM; it never leaves it. Prints the certificate signing\n"+
			"request the TPM signed (or writes it to --csr-out), to send to your QTSP.")
	id := fs.String("id", "", "key `id`, the name clients use")
	alg := fs.String("alg", "", "key `algorithm`: rsa2048, rsa3072, p256 or p384")
	subject := fs.String("subject", "", "CSR subject `DN`, e.g. \"CN=qseal,O=Example Oy,C=FI\" (default CN=ID)")
	csrOut := e.path(fs, "csr-out", admin.Write, "write the CSR (PEM) to this `file` instead of standard output")
	use := purpose(fs)
	var aliases multiFlag
	fs.Var(&aliases, "alias", "another `name` for the key (repeatable)")
	if err := e.parse(fs, args, "id", "alg"); err != nil {
		return err
	}
	a, err := tpm.ParseAlgorithm(*alg)
	if err != nil {
		return usagef("%v", err)
	}
	name := pkix.Name{CommonName: *id}
	if *subject != "" {
		if name, err = dn.Parse(*subject); err != nil {
			return usagef("%v", err)
		}
	}
	if *csrOut != "" {
		if err := e.fs().Writable(*csrOut); err != nil {
			return err
		}
	}
	s, err := e.openState()
	if err != nil {
		return err
	}
	info, csr, err := s.CreateKey(ctx, e.actor(), *id, a, keys.CreateOptions{Aliases: aliases, CSR: &x509.CertificateRequest{Subject: name}, Purpose: *use})
	if err != nil {
		return err
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr})
	if *csrOut != "" {
		if err := e.fs().WriteFile(*csrOut, out, 0o644); err != nil {
			return err
		}
		fmt.Fprintf(e.stderr, "wrote CSR to %s\n", *csrOut)
	} else {
		e.stdout.Write(out)
	}
	fmt.Fprintf(e.stderr, "created key %s (%s, %s)\n", info.ID, info.Kind, info.Algorithm)
	return nil
}

func cmdKeyImport(ctx context.Context, e *env, args []string) error {
	fs := e.flags("key import", "--id ID (--key FILE | --blob FILE) [flags]",
		"Import a key. A PEM or DER key (PKCS #1, PKCS #8, SEC 1, encrypted PKCS #8) is wrapped under\n"+
			"the TPM's storage root key, or sealed by the TPM when the TPM cannot hold it (RSA-4096).\n"+
			"A blob made by `brokerd key wrap` for this TPM's endorsement key is imported as is.\n"+
			"An encrypted key's password comes from --password-file, else from the variable\n"+
			"<KEY_FILE_NAME>_PASSWORD (qwac.key: QWAC_KEY_PASSWORD), else from a prompt.")
	id := fs.String("id", "", "key `id`, the name clients use (key_id, tls.key_path)")
	keyFile := e.path(fs, "key", admin.Read, "private key `file` (PEM or DER)")
	blobFile := e.path(fs, "blob", admin.Read, "wrapped key `file` made by brokerd key wrap")
	certFile := e.path(fs, "cert", admin.Read, "certificate `file` (PEM; may hold the chain); its base name becomes an alias")
	chainFile := e.path(fs, "chain", admin.Read, "intermediate certificates `file` (PEM)")
	pwFile := e.path(fs, "password-file", admin.Read, "`file` holding the key's password")
	use := purpose(fs)
	var aliases multiFlag
	fs.Var(&aliases, "alias", "another `name` for the key (repeatable)")
	if err := e.parse(fs, args, "id"); err != nil {
		return err
	}
	if (*keyFile == "") == (*blobFile == "") {
		return usagef("give exactly one of --key and --blob")
	}
	if *chainFile != "" && *certFile == "" {
		return usagef("--chain needs --cert")
	}
	chain, err := certs.ReadFiles(e.fs().ReadFile, *certFile, *chainFile)
	if err != nil {
		return err
	}
	if *certFile != "" {
		aliases = append(aliases, filepath.Base(*certFile))
	}
	opts := keys.ImportOptions{Aliases: aliases, Chain: chain, Purpose: *use}
	priv, w, err := e.keyFiles().Read(*keyFile, *blobFile, *pwFile)
	if err != nil {
		return err
	}
	s, err := e.openState()
	if err != nil {
		return err
	}
	info, err := s.ImportKey(ctx, e.actor(), *id, priv, w, opts)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "imported key %s (%s, %s)%s\n", info.ID, info.Kind, info.Algorithm, aliasNote(info.Aliases))
	for _, w := range info.Warnings {
		fmt.Fprintln(e.stderr, "warning: "+w)
	}
	return nil
}

func aliasNote(aliases []string) string {
	if len(aliases) == 0 {
		return ""
	}
	return ", also known as " + strings.Join(aliases, ", ")
}

func cmdKeyWrap(_ context.Context, e *env, args []string) error {
	fs := e.flags("key wrap", "(--ek EK.pem | --ek-cert EK.crt --vendor-root FILE) --key FILE --out BLOB",
		"Encrypt a private key for one appliance's TPM, on a machine without a TPM (your\n"+
			"workstation or HSM host), so that the clear key never reaches the appliance.\n"+
			"EK.pem is what `brokerd tpm ek` printed on the appliance; better, give the EK certificate\n"+
			"(`brokerd tpm ek --cert-out`) and the TPM maker's root CA: the certificate is checked\n"+
			"against it first. Import the result with `brokerd key import --blob`.\n"+
			"RSA-2048/3072 and P-256/384 keys only: larger keys do not fit in a TPM.")
	ekFile := fs.String("ek", "", "endorsement public key `file` (PEM)")
	ekCert := fs.String("ek-cert", "", "the TPM's EK certificate `file` (PEM or DER), checked against --vendor-root")
	vendor := fs.String("vendor-root", "", "the TPM maker's root CA `file` (PEM; its intermediate CAs may follow)")
	keyFile := fs.String("key", "", "PEM private key `file`")
	out := fs.String("out", "", "wrapped key `file` to write")
	pwFile := fs.String("password-file", "", "`file` holding the key's password")
	if err := e.parse(fs, args, "key", "out"); err != nil {
		return err
	}
	if (*ekFile == "" && *ekCert == "") || (*ekCert == "") != (*vendor == "") {
		return usagef("give --ek, or --ek-cert with --vendor-root")
	}
	ek, what, err := daemon.WrapTarget(e.fs().ReadFile, *ekFile, *ekCert, *vendor, time.Now())
	if err != nil {
		return err
	}
	priv, _, err := e.keyFiles().Read(*keyFile, "", *pwFile)
	if err != nil {
		return err
	}
	w, err := tpm.WrapKey(ek, priv)
	if err != nil {
		return err
	}
	blob, err := json.MarshalIndent(w, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(*out, append(blob, '\n'), 0o600); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "wrote %s: importable only by the TPM with %s\n", *out, what)
	return nil
}

func cmdKeyCert(ctx context.Context, e *env, args []string) error {
	fs := e.flags("key cert", "--id ID --cert FILE [--chain FILE]",
		"Attach the certificate your QTSP issued for a key (replacing any earlier one). Its\n"+
			"public key must be the key's. The certificate file's base name becomes an alias,\n"+
			"so clients can name it as tls.cert_path.")
	id := fs.String("id", "", "key `id`")
	certFile := e.path(fs, "cert", admin.Read, "certificate `file` (PEM; may hold the chain)")
	chainFile := e.path(fs, "chain", admin.Read, "intermediate certificates `file` (PEM)")
	use := purpose(fs)
	var aliases multiFlag
	fs.Var(&aliases, "alias", "another `name` for the key (repeatable)")
	if err := e.parse(fs, args, "id", "cert"); err != nil {
		return err
	}
	chain, err := certs.ReadFiles(e.fs().ReadFile, *certFile, *chainFile)
	if err != nil {
		return err
	}
	s, err := e.openState()
	if err != nil {
		return err
	}
	info, err := s.AttachCert(ctx, e.actor(), *id, chain, append(aliases, filepath.Base(*certFile)))
	if err == nil && *use != "" {
		info, err = s.SetKeyPurpose(ctx, e.actor(), *id, *use)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "key %s: certificate %s, valid until %s%s\n", info.ID, info.Subject, info.NotAfter.Format(time.DateOnly), aliasNote(info.Aliases))
	return nil
}

func cmdKeyList(_ context.Context, e *env, args []string) error {
	fs := e.flags("key list", "[--json] [--all]", "List the keys: id, aliases, storage kind, algorithm, purpose, certificate subject and expiry, x5t#S256.")
	asJSON := fs.Bool("json", false, "print JSON")
	all := fs.Bool("all", false, "also list brokerd's own keys (brokerd:tls-server, brokerd:audit, ...)")
	if err := e.parse(fs, args); err != nil {
		return err
	}
	s, err := e.openState()
	if err != nil {
		return err
	}
	infos, err := s.Keys.List()
	if err != nil {
		return err
	}
	if !*all {
		infos = slices.DeleteFunc(infos, func(i keys.Info) bool { return keys.Reserved(i.ID) })
	}
	if *asJSON {
		return writeJSON(e.stdout, infos)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKIND\tALGORITHM\tPURPOSE\tSUBJECT\tNOT AFTER\tX5T#S256\tALIASES")
	for _, i := range infos {
		notAfter := "-"
		if i.NotAfter != nil {
			notAfter = i.NotAfter.Format(time.DateOnly)
		}
		use := string(i.Purpose)
		if i.Purpose == keys.PurposeAny && i.ChainLen == 0 {
			use = "any!" // no certificate says what it is: config check explains
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", i.ID, i.Kind, i.Algorithm, use, dash(i.Subject), notAfter, dash(i.X5tS256), dash(strings.Join(i.Aliases, ",")))
	}
	return tw.Flush()
}

func cmdKeySign(ctx context.Context, e *env, args []string) error {
	fs := e.flags("key sign", "--id ID [--alg RS|PS|ES] [--hash SHA256|SHA512]",
		"Sign standard input and print the signature in standard base64, exactly as POST /sign\n"+
			"returns it. Without --alg: RS for RSA keys, ES (raw r||s) for EC keys. PS uses a salt\n"+
			"as long as the hash.")
	id := fs.String("id", "", "key `id` or alias")
	alg := fs.String("alg", "", "signature `algorithm`: RS, PS or ES")
	hash := fs.String("hash", "SHA256", "`hash`: SHA256 or SHA512")
	if err := e.parse(fs, args, "id"); err != nil {
		return err
	}
	a, err := keys.ParseSignAlg(*alg)
	if err != nil {
		return usagef("--alg: %v", err)
	}
	h, err := keys.ParseHash(*hash)
	if err != nil {
		return usagef("--hash: %v", err)
	}
	data, err := io.ReadAll(io.LimitReader(e.stdin, maxSignInput+1))
	if err != nil {
		return err
	}
	if len(data) > maxSignInput {
		return fmt.Errorf("input larger than %d bytes", maxSignInput)
	}
	s, err := e.openState()
	if err != nil {
		return err
	}
	sig, err := s.SignData(ctx, e.actor(), *id, data, a, h)
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, base64.StdEncoding.EncodeToString(sig))
	return nil
}

func cmdKeyDelete(ctx context.Context, e *env, args []string) error {
	fs := e.flags("key delete", "--id ID", "Delete a key and its aliases. A key generated in the TPM is gone for good.")
	id := fs.String("id", "", "key `id`")
	if err := e.parse(fs, args, "id"); err != nil {
		return err
	}
	s, err := e.openState()
	if err != nil {
		return err
	}
	if err := s.DeleteKey(ctx, e.actor(), *id); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "deleted key %s\n", *id)
	return nil
}

func cmdKeyOrigins(ctx context.Context, e *env, args []string) error {
	fs := e.flags("key origins", "--id ID [--origin URL]...",
		"Bind a QWAC to the bank origins it may be used for: makeRequest with it to any other\n"+
			"origin, directly or through a redirect, is refused. Without --origin the binding is\n"+
			"removed (the policy alone decides).")
	id := fs.String("id", "", "key `id`")
	var origins multiFlag
	fs.Var(&origins, "origin", "bank `origin` scheme://host[:port]; host may start with *. (repeatable)")
	if err := e.parse(fs, args, "id"); err != nil {
		return err
	}
	s, err := e.openState()
	if err != nil {
		return err
	}
	info, err := s.SetKeyOrigins(ctx, e.actor(), *id, origins)
	if err != nil {
		return err
	}
	if len(info.Origins) == 0 {
		fmt.Fprintf(e.stdout, "key %s is bound to no origin\n", info.ID)
	} else {
		fmt.Fprintf(e.stdout, "key %s may be used for %s only\n", info.ID, strings.Join(info.Origins, ", "))
	}
	return nil
}

func cmdKeyConfig(ctx context.Context, e *env, args []string) error {
	fs := e.flags("key config", "--id ID [--ob-iss S] [--ob-tan S] [--jws-kid S]",
		"Set a key's defaults for the signing helpers (POST /jws, /clientAssertion): the\n"+
			"kid of its JWS headers (default: the certificate's x5t#S256) and, for UK Open\n"+
			"Banking's x-jws-signature, the iss claim (default: the certificate's subject;\n"+
			"with the OB Directory, \"{org-id}/{software-statement-id}\") and the tan claim\n"+
			"(the trust anchor, e.g. openbanking.org.uk). An empty value removes a default;\n"+
			"flags not given stay as they are. A client's header claims override them.")
	id := fs.String("id", "", "key `id`")
	iss := fs.String("ob-iss", "", "Open Banking `iss` claim")
	tan := fs.String("ob-tan", "", "Open Banking `tan` claim (trust anchor domain)")
	kid := fs.String("jws-kid", "", "`kid` of the key's JWS headers")
	if err := e.parse(fs, args, "id"); err != nil {
		return err
	}
	var c keys.JOSEChange
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "ob-iss":
			c.OBISS = iss
		case "ob-tan":
			c.OBTAN = tan
		case "jws-kid":
			c.KID = kid
		}
	})
	s, err := e.openState()
	if err != nil {
		return err
	}
	info, err := s.SetKeyJOSE(ctx, e.actor(), *id, c)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "key %s: jws kid %s, ob iss %s, ob tan %s\n", info.ID,
		cmp.Or(info.JOSE.KID, "(x5t#S256)"), cmp.Or(info.JOSE.OBISS, "(certificate subject)"), cmp.Or(info.JOSE.OBTAN, "(none)"))
	return nil
}
