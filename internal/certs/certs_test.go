package certs_test

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/brokerd/brokerd/internal/certs"
	"github.com/brokerd/brokerd/internal/testpki"
)

func TestReadFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	leaf, inter := testpki.NewCA(t, "Leaf"), testpki.NewCA(t, "Intermediate")
	leafFile := testpki.WriteFile(t, filepath.Join(dir, "leaf.pem"), testpki.CertPEM(leaf.Cert))
	interFile := testpki.WriteFile(t, filepath.Join(dir, "inter.pem"), append([]byte("junk before\n"), testpki.CertPEM(inter.Cert)...))
	junk := testpki.WriteFile(t, filepath.Join(dir, "junk.pem"), []byte("not a certificate"))

	cs, err := certs.ReadFiles(os.ReadFile, leafFile, "", interFile)
	if err != nil || len(cs) != 2 || cs[0].Subject.CommonName != "Leaf" || cs[1].Subject.CommonName != "Intermediate" {
		t.Fatalf("ReadFiles: %v, %v", cs, err)
	}
	if cs, err := certs.ReadFiles(os.ReadFile); err != nil || len(cs) != 0 {
		t.Errorf("no files: %v, %v", cs, err)
	}
	if _, err := certs.ReadFiles(os.ReadFile, leafFile, junk); err == nil || !strings.HasPrefix(err.Error(), junk+": no PEM certificate") {
		t.Errorf("a file without certificates: %v", err)
	}
	if _, err := certs.ReadFiles(os.ReadFile, filepath.Join(dir, "missing")); !os.IsNotExist(err) {
		t.Errorf("a missing file: %v", err)
	}
}

// TestParsePublicKey: a public key or a certificate, PEM or DER.
func TestParsePublicKey(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t, "EK")
	want := ca.Cert.PublicKey.(*ecdsa.PublicKey)
	spki, err := x509.MarshalPKIXPublicKey(want)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"PEM key":           pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: spki}),
		"PEM certificate":   testpki.CertPEM(ca.Cert),
		"DER key":           spki,
		"DER certificate":   ca.Cert.Raw,
		"after a CSR block": append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{1}}), testpki.CertPEM(ca.Cert)...),
	} {
		pub, err := certs.ParsePublicKey(data)
		if err != nil || !want.Equal(pub) {
			t.Errorf("%s: %v, %v", name, pub, err)
		}
	}
	for name, data := range map[string][]byte{
		"text":        []byte("hello"),
		"other PEM":   pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}}),
		"broken key":  pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1}}),
		"broken cert": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}),
	} {
		if _, err := certs.ParsePublicKey(data); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}
