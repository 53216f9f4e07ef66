package pki_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/brokerd/brokerd/internal/testpki"
	"github.com/brokerd/brokerd/pki"
	"github.com/brokerd/brokerd/policy"
	"github.com/brokerd/brokerd/store"
)

var now = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

func newAuthority(t *testing.T) *pki.Authority {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	root, err := pki.NewRoot(key, pkix.Name{CommonName: "brokerd CA test"}, 10*365*24*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.NewAuthority(root, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func csrFor(t *testing.T, key crypto.Signer) *x509.CertificateRequest {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "ignored"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := x509.ParseCertificateRequest(der)
	return csr
}

func verify(t *testing.T, ca *pki.Authority, cert *x509.Certificate, usage x509.ExtKeyUsage, at time.Time, dnsName string) error {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	_, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{usage}, CurrentTime: at, DNSName: dnsName})
	return err
}

func TestRootAndAuthority(t *testing.T) {
	t.Parallel()
	ca := newAuthority(t)
	c := ca.Cert
	if !c.IsCA || !c.MaxPathLenZero || c.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign|x509.KeyUsageDigitalSignature ||
		!c.NotAfter.Equal(now.Add(10*365*24*time.Hour).Truncate(time.Second)) || len(c.SubjectKeyId) != 20 {
		t.Fatalf("root %+v", c)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if _, err := pki.NewAuthority(c, other, nil); err == nil || !strings.Contains(err.Error(), "is not the key of") {
		t.Fatalf("wrong key: %v", err)
	}
	leaf, key := testpki.NewCA(t, "x").IssueKey(t, testpki.Leaf{Subject: pkix.Name{CommonName: "leaf"}})
	if _, err := pki.NewAuthority(leaf, key, nil); err == nil || !strings.Contains(err.Error(), "is not a CA certificate") {
		t.Fatalf("leaf as CA: %v", err)
	}
}

func TestIssueServer(t *testing.T) {
	t.Parallel()
	ca := newAuthority(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cert, err := ca.IssueServer(key.Public(), []string{"Broker.LAN", "localhost", "127.0.0.1", "::1"}, 30*24*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != "Broker.LAN" || strings.Join(cert.DNSNames, ",") != "broker.lan,localhost" || len(cert.IPAddresses) != 2 ||
		len(cert.ExtKeyUsage) != 1 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth || cert.IsCA {
		t.Fatalf("server certificate %+v", cert)
	}
	for _, name := range []string{"broker.lan", "localhost", "127.0.0.1"} {
		if err := verify(t, ca, cert, x509.ExtKeyUsageServerAuth, now, name); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := verify(t, ca, cert, x509.ExtKeyUsageServerAuth, now.Add(31*24*time.Hour), "localhost"); err == nil {
		t.Error("valid after its validity")
	}
	for _, bad := range [][]string{nil, {"has space"}, {"http://x"}} {
		if _, err := ca.IssueServer(key.Public(), bad, time.Hour, now); err == nil {
			t.Errorf("names %q accepted", bad)
		}
	}
	// Never beyond the CA.
	long, err := ca.IssueServer(key.Public(), []string{"localhost"}, 50*365*24*time.Hour, now)
	if err != nil || !long.NotAfter.Equal(ca.Cert.NotAfter) {
		t.Fatalf("capped validity: %v %v", long.NotAfter, err)
	}
}

func TestIssueClient(t *testing.T) {
	t.Parallel()
	ca := newAuthority(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	roles := []string{"https://directory.example/roles/reader", "https://directory.example/roles/payer"}
	cert, err := ca.IssueClient(csrFor(t, key), pki.Client{Name: "https://directory.example/apps/agg", Roles: roles}, 90*24*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.String() != "CN=https://directory.example/apps/agg" || len(cert.URIs) != 1 || cert.URIs[0].String() != "https://directory.example/apps/agg" ||
		len(cert.ExtKeyUsage) != 1 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth || len(cert.DNSNames) != 0 {
		t.Fatalf("client certificate %+v", cert)
	}
	if err := verify(t, ca, cert, x509.ExtKeyUsageClientAuth, now, ""); err != nil {
		t.Fatal(err)
	}
	if err := verify(t, ca, cert, x509.ExtKeyUsageServerAuth, now, ""); err == nil {
		t.Fatal("a client certificate serves as a server's")
	}
	id := policy.IdentityOf([]*x509.Certificate{cert, ca.Cert})
	if strings.Join(id.Roles, " ") != strings.Join(roles, " ") {
		t.Fatalf("roles read back: %q", id.Roles)
	}
	// A configured role extension.
	custom := asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 7}
	ca2, _ := pki.NewAuthority(ca.Cert, ca.Signer, custom)
	cert2, err := ca2.IssueClientKey(key.Public(), pki.Client{Name: "agg", Roles: roles[:1]}, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if got := (policy.IdentityOptions{RoleOID: custom}).Of([]*x509.Certificate{cert2, ca.Cert}).Roles; len(got) != 1 || got[0] != roles[0] {
		t.Fatalf("custom role OID: %q", got)
	}
	if len(cert2.URIs) != 0 {
		t.Errorf("a plain name became a URI SAN: %v", cert2.URIs)
	}

	// Refusals.
	tampered := csrFor(t, key)
	tampered.Signature[len(tampered.Signature)-3] ^= 0xff
	if _, err := ca.IssueClient(tampered, pki.Client{Name: "agg"}, time.Hour, now); err == nil || !strings.Contains(err.Error(), "the CSR's signature does not verify") {
		t.Errorf("tampered CSR: %v", err)
	}
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	for _, c := range []struct {
		pub  crypto.PublicKey
		name string
		want string
	}{
		{small.Public(), "agg", "RSA key of 1024 bits"},
		{p224.Public(), "agg", "curve P-224 is not accepted"},
		{key.Public(), "", "client name is empty"},
		{key.Public(), strings.Repeat("x", 65), "longer than 64"},
		{key.Public(), "bad\nname", "control characters"},
	} {
		if _, err := ca.IssueClientKey(c.pub, pki.Client{Name: c.name}, time.Hour, now); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.want, err, c.want)
		}
	}
	if _, err := ca.IssueClientKey(key.Public(), pki.Client{Name: "agg", Roles: []string{"not a url"}}, time.Hour, now); err == nil {
		t.Error("a role that is not a URL was written")
	}
	if _, err := ca.IssueClientKey(key.Public(), pki.Client{Name: "agg"}, 0, now); err == nil {
		t.Error("zero validity accepted")
	}
}

func openStore(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), store.FileName), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func TestRegistry(t *testing.T) {
	t.Parallel()
	ca := newAuthority(t)
	reg := pki.NewRegistry(openStore(t))
	issue := func(name string, key *ecdsa.PrivateKey, at time.Time, validity time.Duration) (*x509.Certificate, pki.Record) {
		t.Helper()
		spki, _ := x509.MarshalPKIXPublicKey(key.Public())
		if err := reg.CheckNew(name, pki.KeySHA256(spki), at); err != nil {
			t.Fatal(err)
		}
		cert, err := ca.IssueClientKey(key.Public(), pki.Client{Name: name, Roles: []string{"https://r.example/x"}}, validity, at)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := reg.Add(cert, pki.Client{Name: name, Roles: []string{"https://r.example/x"}})
		if err != nil {
			t.Fatal(err)
		}
		return cert, rec
	}
	k1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cert1, rec1 := issue("agg-1", k1, now, 24*time.Hour)
	if rec1.Serial != pki.SerialHex(cert1) || rec1.Status(now) != "valid" || rec1.Status(now.Add(25*time.Hour)) != "expired" ||
		len(rec1.Fingerprint) != 64 || rec1.Roles[0] != "https://r.example/x" {
		t.Fatalf("record %+v", rec1)
	}
	spki2, _ := x509.MarshalPKIXPublicKey(k2.Public())
	spki1, _ := x509.MarshalPKIXPublicKey(k1.Public())
	if err := reg.CheckNew("agg-1", pki.KeySHA256(spki2), now); !errors.Is(err, pki.ErrNameTaken) || !strings.Contains(err.Error(), "revoke it first") {
		t.Fatalf("name collision: %v", err)
	}
	if err := reg.CheckNew("agg-1", pki.KeySHA256(spki2), now.Add(48*time.Hour)); err != nil {
		t.Fatalf("the name of an expired certificate: %v", err)
	}
	// Revoke by serial in openssl's spelling.
	colon := strings.ToUpper(pki.SerialHex(cert1))
	var parts []string
	for len(colon) > 2 {
		parts = append(parts, colon[:2])
		colon = colon[2:]
	}
	parts = append(parts, colon)
	rev, err := reg.Revoke("00"+strings.Join(parts, ":"), now)
	if err != nil || rev.Revoked == nil || rev.Status(now) != "revoked" {
		t.Fatalf("revoke by serial: %+v %v", rev, err)
	}
	if _, err := reg.Revoke(rec1.Serial, now); err == nil || !strings.Contains(err.Error(), "was revoked on") {
		t.Fatalf("revoked twice: %v", err)
	}
	if err := reg.CheckNew("agg-2", pki.KeySHA256(spki1), now); err == nil || !strings.Contains(err.Error(), "the client needs a new key") {
		t.Fatalf("a revoked key certified again: %v", err)
	}
	// The name is free again; two valid ones by name are ambiguous.
	issue("agg-1", k2, now, 24*time.Hour)
	_, rec3 := issue("other", k2, now.Add(48*time.Hour), 24*time.Hour)
	if _, err := reg.Revoke("nobody", now); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown: %v", err)
	}
	if rec, err := reg.Revoke("other", now); err != nil || rec.Serial != rec3.Serial {
		t.Fatalf("revoke by name: %+v %v", rec, err)
	}
	// An expired certificate does not stand in the way of its renewal,
	// nor of revoking the renewed one by name.
	k3, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k4, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	issue("renewed", k3, now.Add(-48*time.Hour), 24*time.Hour)
	_, rec5 := issue("renewed", k4, now, 24*time.Hour)
	if rec, err := reg.Revoke("renewed", now); err != nil || rec.Serial != rec5.Serial {
		t.Fatalf("revoke the renewed one by name: %+v %v", rec, err)
	}
	revoked, err := reg.RevokedSerials()
	if err != nil || len(revoked) != 3 || !revoked[rec1.Serial].Equal(now) {
		t.Fatalf("revoked serials %v %v", revoked, err)
	}
	list, err := reg.List()
	if err != nil || len(list) != 5 || list[0].Name != "agg-1" || list[2].Name != "other" || list[3].Name != "renewed" {
		t.Fatalf("list %+v %v", list, err)
	}
}

// chainOf is a client chain as a server sees it after verification.
type chain struct{ leaf, inter, root *x509.Certificate }

func (c chain) certs() []*x509.Certificate { return []*x509.Certificate{c.leaf, c.inter, c.root} }

func crlFile(t *testing.T, dir, name string, ca *testpki.CA, serials []*big.Int, next time.Time, der bool) string {
	t.Helper()
	tmpl := &x509.RevocationList{Number: big.NewInt(time.Now().UnixNano()), ThisUpdate: time.Now().Add(-time.Hour), NextUpdate: next}
	for _, s := range serials {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: now})
	}
	data, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	if !der {
		data = pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: data})
	}
	// By rename: a watcher must never see the file half written.
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path+".tmp", data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestRevocations(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	root := testpki.NewCA(t, "Root")
	interCert, interKey := root.IssueKey(t, testpki.Leaf{Subject: pkix.Name{CommonName: "Issuer"}, IsCA: true})
	inter := &testpki.CA{Cert: interCert, Key: interKey}
	leaf := func(cn string) chain {
		c, _ := inter.IssueKey(t, testpki.Leaf{Subject: pkix.Name{CommonName: cn}})
		return chain{c, interCert, root.Cert}
	}
	alice, bob := leaf("alice"), leaf("bob")
	rogue := testpki.NewCA(t, "Issuer") // same name, other key
	interCRL := crlFile(t, dir, "issuer.pem", inter, []*big.Int{alice.leaf.SerialNumber}, time.Now().Add(time.Hour), false)
	forged := crlFile(t, dir, "forged.der", rogue, []*big.Int{bob.leaf.SerialNumber}, time.Now().Add(time.Hour), true)
	rootCRL := crlFile(t, dir, "root.pem", root, nil, time.Now().Add(-time.Minute), false) // stale: applied anyway

	rev, err := pki.NewRevocations([]string{interCRL, forged, rootCRL}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := rev.Check(alice.certs()); !errors.Is(err, pki.ErrRevoked) || !strings.Contains(err.Error(), "client certificate (serial "+pki.SerialHex(alice.leaf)+") is on the CRL of \"CN=Issuer\"") {
		t.Fatalf("alice: %v", err)
	}
	if err := rev.Check(bob.certs()); err != nil {
		t.Fatalf("bob, listed only on a CRL the issuer did not sign: %v", err)
	}
	// The root revokes the intermediate: every client under it falls.
	crlFile(t, dir, "root.pem", root, []*big.Int{interCert.SerialNumber}, time.Now().Add(time.Hour), false)
	if err := rev.Reload(); err != nil {
		t.Fatal(err)
	}
	if err := rev.Check(bob.certs()); !errors.Is(err, pki.ErrRevoked) || !strings.Contains(err.Error(), `certificate of CA "CN=Issuer" in the client's chain`) {
		t.Fatalf("bob under a revoked issuer: %v", err)
	}
	// A broken file keeps the CRLs in force.
	os.WriteFile(rootCRL, []byte("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"), 0o644)
	if err := rev.Reload(); err == nil {
		t.Fatal("a broken CRL file loaded")
	}
	if err := rev.Check(bob.certs()); !errors.Is(err, pki.ErrRevoked) {
		t.Fatalf("after a failed reload: %v", err)
	}
	for _, bad := range []string{filepath.Join(dir, "missing.pem"), forged + "x"} {
		if _, err := pki.NewRevocations([]string{bad}, nil); err == nil {
			t.Errorf("%s loaded", bad)
		}
	}
	empty := filepath.Join(dir, "empty.pem")
	os.WriteFile(empty, []byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"), 0o644)
	if _, err := pki.NewRevocations([]string{empty}, nil); err == nil || !strings.Contains(err.Error(), "no CRL in it") {
		t.Errorf("a file without CRL: %v", err)
	}

	// brokerd's own revocations.
	ca := newAuthority(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	own, _ := ca.IssueClientKey(key.Public(), pki.Client{Name: "carol"}, time.Hour, time.Now())
	ownChain := []*x509.Certificate{own, ca.Cert}
	if err := rev.Check(ownChain); err != nil {
		t.Fatal(err)
	}
	rev.SetOwn(ca.Cert, map[string]time.Time{pki.SerialHex(own): now})
	if err := rev.Check(ownChain); !errors.Is(err, pki.ErrRevoked) || !strings.Contains(err.Error(), "revoked on 2026-11-23T12:00:00Z") {
		t.Fatalf("own revocation: %v", err)
	}
	// The CA's certificate issued again (same name, same key) is the
	// same CA.
	again, err := pki.NewRoot(ca.Signer, ca.Cert.Subject, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := rev.Check([]*x509.Certificate{own, again}); !errors.Is(err, pki.ErrRevoked) {
		t.Fatalf("under the CA's new certificate: %v", err)
	}
	// The same serial under another CA is someone else.
	other := newAuthority(t)
	if err := rev.Check([]*x509.Certificate{own, other.Cert}); err != nil {
		t.Fatalf("another CA's chain: %v", err)
	}
}

func TestRevocationsWatch(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testpki.NewCA(t, "Issuer")
	cert, _ := ca.IssueKey(t, testpki.Leaf{Subject: pkix.Name{CommonName: "dave"}})
	path := crlFile(t, dir, "crl.pem", ca, nil, time.Now().Add(time.Hour), false)
	rev, err := pki.NewRevocations([]string{path}, nil)
	if err != nil {
		t.Fatal(err)
	}
	reloads := make(chan error, 4)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go rev.Watch(ctx, 10*time.Millisecond, func(err error) { reloads <- err })
	crlFile(t, dir, "crl.pem", ca, []*big.Int{cert.SerialNumber}, time.Now().Add(time.Hour), false)
	select {
	case err := <-reloads:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the changed CRL file was not reloaded")
	}
	if err := rev.Check([]*x509.Certificate{cert, ca.Cert}); !errors.Is(err, pki.ErrRevoked) {
		t.Fatalf("after the reload: %v", err)
	}
}

func TestCRL(t *testing.T) {
	t.Parallel()
	ca := newAuthority(t)
	data, err := ca.CRL(map[string]time.Time{"0a": now, "ff01": now.Add(time.Minute)}, 7, now, now.Add(7*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	crl, err := x509.ParseRevocationList(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(ca.Cert); err != nil {
		t.Fatal(err)
	}
	if crl.Number.Int64() != 7 || len(crl.RevokedCertificateEntries) != 2 || crl.RevokedCertificateEntries[0].SerialNumber.Int64() != 10 ||
		crl.RevokedCertificateEntries[1].SerialNumber.Int64() != 0xff01 || !crl.NextUpdate.Equal(now.Add(7*24*time.Hour)) {
		t.Fatalf("CRL %+v", crl)
	}
	if _, err := ca.CRL(map[string]time.Time{"xyz": now}, 1, now, now.Add(time.Hour)); err == nil {
		t.Fatal("a serial that is not hex")
	}
}
