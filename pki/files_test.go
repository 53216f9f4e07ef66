package pki_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/brokerd/brokerd/keys"
	"github.com/brokerd/brokerd/pki"
)

func TestParseCSR(t *testing.T) {
	t.Parallel()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr := csrFor(t, key)
	altered := append([]byte(nil), csr.Raw...)
	altered[len(altered)-5] ^= 0xff // in the signature
	for name, data := range map[string][]byte{
		"PEM":     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr.Raw}),
		"old PEM": pem.EncodeToMemory(&pem.Block{Type: "NEW CERTIFICATE REQUEST", Bytes: csr.Raw}),
		"DER":     csr.Raw,
	} {
		if got, err := pki.ParseCSR(data); err != nil || !got.PublicKey.(*ecdsa.PublicKey).Equal(&key.PublicKey) {
			t.Errorf("%s: %v", name, err)
		}
	}
	for name, c := range map[string]struct {
		data []byte
		want string
	}{
		"certificate": {pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: csr.Raw}), "not a certificate signing request (PEM or DER): the PEM holds CERTIFICATE"},
		"text":        {[]byte("hello\n"), "not a certificate signing request (PEM or DER)"},
		"broken PEM":  {pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{0x30, 1, 2}}), "not a certificate signing request (PEM or DER)"},
		"altered":     {altered, "signature does not verify"},
	} {
		if _, err := pki.ParseCSR(c.data); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
}

func TestClientFileName(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"agg-1":                         "agg-1",
		"Agg_2.example":                 "Agg_2.example",
		"../etc/passwd":                 ".._etc_passwd",
		"https://tpp.example/clients/1": "https___tpp.example_clients_1",
		"Åsa Öberg":                     "_sa__berg",
	} {
		if got := pki.ClientFileName(in); got != want {
			t.Errorf("ClientFileName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestNewClientKey(t *testing.T) {
	t.Parallel()
	key, keyPEM, err := pki.NewClientKey()
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := keys.ParsePrivateKeyPEM(keyPEM, nil)
	if err != nil || !key.Equal(parsed) || key.Curve != elliptic.P256() {
		t.Fatalf("the PEM is not the P-256 key: %v", err)
	}
}

func TestListing(t *testing.T) {
	t.Parallel()
	ca := newAuthority(t)
	reg := pki.NewRegistry(openStore(t))
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, name := range []string{"b", "a"} {
		cert, err := ca.IssueClientKey(key.Public(), pki.Client{Name: name}, 24*time.Hour, now)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := reg.Add(cert, pki.Client{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := reg.Revoke("b", now); err != nil {
		t.Fatal(err)
	}
	rows, err := reg.Listing(now)
	if err != nil || len(rows) != 2 {
		t.Fatalf("Listing: %v, %v", rows, err)
	}
	if rows[0].Name != "a" || rows[0].Status != "valid" || rows[1].Status != "revoked" || rows[0].Cert != nil ||
		!strings.HasPrefix(rows[0].PEM, "-----BEGIN CERTIFICATE-----") {
		t.Errorf("Listing: %+v", rows)
	}
	if rows, _ := reg.Listing(now.Add(48 * time.Hour)); rows[0].Status != "expired" {
		t.Errorf("after the end: %s", rows[0].Status)
	}
}
