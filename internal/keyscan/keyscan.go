// Package keyscan finds private key material left in files, for the tests
// that prove brokerd never writes a key in the clear: every DER form of
// the key (PKCS #1, SEC 1, PKCS #8) and its secret numbers (the private
// scalar; the primes and exponents), raw, in hex and in base64 (standard
// and URL alphabets, at every alignment), in the bytes of every file and
// in the decoded strings of every JSON value of a bbolt file.
package keyscan

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"

	bolt "go.etcd.io/bbolt"
)

// Needles returns the byte strings that betray key, by name.
func Needles(key crypto.Signer) map[string][]byte {
	n := map[string][]byte{}
	if der, err := x509.MarshalPKCS8PrivateKey(key); err == nil {
		n["PKCS #8 DER"] = der
	}
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		if der, err := x509.MarshalECPrivateKey(k); err == nil {
			n["SEC 1 DER"] = der
		}
		if d, err := k.Bytes(); err == nil {
			n["private scalar"] = d
		}
	case *rsa.PrivateKey:
		n["PKCS #1 DER"] = x509.MarshalPKCS1PrivateKey(k)
		n["private exponent"] = k.D.Bytes()
		for i, p := range k.Primes {
			n[fmt.Sprintf("prime %d", i+1)] = p.Bytes()
		}
		k.Precompute()
		for name, v := range map[string]*big.Int{"dP": k.Precomputed.Dp, "dQ": k.Precomputed.Dq, "qInv": k.Precomputed.Qinv} {
			if v != nil {
				n[name] = v.Bytes()
			}
		}
	}
	return n
}

// forms are the encodings of a needle searched for: raw, hex, and the
// base64 text that encodes it whatever its offset in the encoded stream.
func forms(needle []byte) map[string][][]byte {
	f := map[string][][]byte{"raw": {needle}, "hex": {[]byte(hex.EncodeToString(needle)), []byte(strings.ToUpper(hex.EncodeToString(needle)))}}
	for _, enc := range []struct {
		name string
		e    *base64.Encoding
	}{{"base64", base64.StdEncoding}, {"base64url", base64.URLEncoding}} {
		for k := range 3 {
			text := enc.e.EncodeToString(append(make([]byte, k), needle...))
			// Skip the characters that hold the padding bytes' bits, and
			// the last two, which may hold the next bytes'.
			from, to := (k*8+5)/6+1, len(text)-4
			if to-from >= 16 {
				f[enc.name] = append(f[enc.name], []byte(text[from:to]))
			}
		}
	}
	return f
}

// Scan returns where data holds a needle, as "what (encoding)". Line
// breaks are ignored, as PEM and wrapped base64 put them anywhere.
func Scan(data []byte, needles map[string][]byte) []string {
	var found []string
	flat := bytes.ReplaceAll(bytes.ReplaceAll(data, []byte("\r"), nil), []byte("\n"), nil)
	for what, n := range needles {
		for enc, variants := range forms(n) {
			for _, v := range variants {
				if bytes.Contains(data, v) || bytes.Contains(flat, v) {
					found = append(found, fmt.Sprintf("%s (%s)", what, enc))
					break
				}
			}
		}
	}
	slices.Sort(found)
	return found
}

// ScanDir scans every file under dir except those named, and every value
// of the bbolt files among them, and returns "path: what (encoding)" for
// each finding.
func ScanDir(dir string, needles map[string][]byte, except ...string) []string {
	var found []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || slices.Contains(except, p) {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		for _, f := range Scan(data, needles) {
			found = append(found, p+": "+f)
		}
		for _, f := range scanBolt(p, needles) {
			found = append(found, p+": "+f)
		}
		return nil
	})
	return found
}

// scanBolt decodes every value of a bbolt file (when p is one) and scans
// the strings of JSON values once decoded from base64 or hex.
func scanBolt(p string, needles map[string][]byte) []string {
	db, err := bolt.Open(p, 0o400, &bolt.Options{ReadOnly: true, Timeout: 1})
	if err != nil {
		return nil
	}
	defer db.Close()
	var found []string
	db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			return b.ForEach(func(k, v []byte) error {
				for _, s := range jsonStrings(v) {
					for _, dec := range decodings(s) {
						for _, f := range Scan(dec, needles) {
							found = append(found, fmt.Sprintf("bucket %s key %q: decoded string: %s", name, k, f))
						}
					}
				}
				return nil
			})
		})
	})
	return found
}

// jsonStrings returns every string in a JSON value (none when v is not
// JSON).
func jsonStrings(v []byte) []string {
	var x any
	if json.Unmarshal(v, &x) != nil {
		return nil
	}
	var out []string
	var walk func(any)
	walk = func(x any) {
		switch t := x.(type) {
		case string:
			out = append(out, t)
		case []any:
			for _, e := range t {
				walk(e)
			}
		case map[string]any:
			for _, e := range t {
				walk(e)
			}
		}
	}
	walk(x)
	return out
}

// decodings are what a string may encode.
func decodings(s string) [][]byte {
	var out [][]byte
	for _, e := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		if b, err := e.DecodeString(s); err == nil {
			out = append(out, b)
		}
	}
	if b, err := hex.DecodeString(s); err == nil {
		out = append(out, b)
	}
	return out
}
