package keyscan

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// TestScanFindsEveryEncoding: each way a key could be left on disk is
// found: DER and PEM, the secret numbers, hex, base64 at each offset of
// the stream, and base64 inside a JSON value of a bbolt file.
func TestScanFindsEveryEncoding(t *testing.T) {
	t.Parallel()
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	r, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecN, rN := Needles(ec), Needles(r)
	d, _ := ec.Bytes()
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(r)
	cases := []struct {
		name    string
		data    []byte
		needles map[string][]byte
		want    string
	}{
		{"PEM of PKCS #8", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}), rN, "PKCS #8 DER (base64)"},
		{"the scalar in hex", []byte("x=" + hex.EncodeToString(d)), ecN, "private scalar (hex)"},
		{"the scalar in upper-case hex", []byte(strings.ToUpper(hex.EncodeToString(d))), ecN, "private scalar (hex)"},
		{"a prime raw", append([]byte("junk"), r.Primes[1].Bytes()...), rN, "prime 2 (raw)"},
		{"base64 at offset 1", []byte(base64.StdEncoding.EncodeToString(append([]byte{7}, d...))), ecN, "private scalar (base64)"},
		{"base64 at offset 2", []byte(base64.StdEncoding.EncodeToString(append([]byte{7, 8}, d...))), ecN, "private scalar (base64)"},
		{"base64url", []byte(base64.URLEncoding.EncodeToString(r.D.Bytes())), rN, "private exponent (base64url)"},
	}
	for _, c := range cases {
		found := strings.Join(Scan(c.data, c.needles), ", ")
		if !strings.Contains(found, c.want) {
			t.Errorf("%s: found %q, want %q", c.name, found, c.want)
		}
	}
	if f := Scan([]byte("nothing secret here"), rN); len(f) != 0 {
		t.Errorf("false finding: %v", f)
	}
	// Inside a bbolt file, in a JSON record, hex of base64: only decoding
	// the value shows it.
	dir := t.TempDir()
	db, err := bolt.Open(filepath.Join(dir, "state.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := json.Marshal(map[string]any{"blob": hex.EncodeToString([]byte(base64.StdEncoding.EncodeToString(d)))})
	inner, _ := json.Marshal(map[string]string{"x": base64.StdEncoding.EncodeToString(d)})
	db.Update(func(tx *bolt.Tx) error {
		b, _ := tx.CreateBucketIfNotExists([]byte("keys"))
		b.Put([]byte("a"), rec)
		return b.Put([]byte("b"), inner)
	})
	db.Close()
	os.WriteFile(filepath.Join(dir, "clean.txt"), []byte("clean"), 0o600)
	found := strings.Join(ScanDir(dir, ecN), "\n")
	if !strings.Contains(found, `bucket keys key "b": decoded string: private scalar (raw)`) {
		t.Errorf("bbolt finding missing:\n%s", found)
	}
}
