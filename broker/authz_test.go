package broker_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"testing"

	"github.com/brokerd/brokerd/internal/mockbank"
	"github.com/brokerd/brokerd/internal/testpki"
	"github.com/brokerd/brokerd/policy"
)

const (
	roleAggregator = "https://directory.example/roles/aggregator"
	roleSigner     = "https://directory.example/roles/signer"
	roleAuditor    = "https://directory.example/roles/auditor"
)

// TestAuthorizationMatrix: clients told apart by CN, by an ib1Roles role
// URL and by a PSD2 role, and clients no rule matches (among them two
// whose PSD2 claims are malformed and one whose roles sit under another
// OID), against every key, for sign and for makeRequest to an allowed
// and a refused origin. Every answer is written out by hand below.
func TestAuthorizationMatrix(t *testing.T) {
	t.Parallel()
	bank := mockbank.Start(t, mockbank.Options{})
	toBank := func(r policy.Rule) policy.Rule {
		r.Origins, r.AllowPrivate = []string{bank.URL}, true
		return r
	}
	s := newStack(t, stackOptions{bank: bank, rules: []policy.Rule{
		{Name: "teller-sign", CN: "teller", Keys: []string{"rsa.key", "sealed.key"}, Ops: []string{"sign"}},
		toBank(policy.Rule{Name: "teller-bank", CN: "teller", Keys: []string{"qwac.key"}, Ops: []string{"makeRequest"}}),
		toBank(policy.Rule{Name: "aggregators", Role: roleAggregator, Keys: []string{"*"}, Ops: []string{"makeRequest"}}),
		{Name: "signers", Role: roleSigner, Keys: []string{"sealed.key"}, Ops: []string{"sign"}},
		toBank(policy.Rule{Name: "ai", PSD2Role: "psp_ai", Keys: []string{"qwac-ec.key", "rsa.key"}, Ops: []string{"*"}}),
		toBank(policy.Rule{Name: "pi", PSD2Role: "PSP_PI", Keys: []string{"*"}, Ops: []string{"*"}}),
	}})
	other := "https://bank.test:" + bank.URL[strings.LastIndex(bank.URL, ":")+1:]

	ai, pi, ic := testpki.PSD2Roles(t, "PSP_AI"), testpki.PSD2Roles(t, "PSP_PI"), testpki.PSD2Roles(t, "PSP_IC")
	clients := map[string]*http.Client{
		"teller":   s.clientWith(t, "teller"),
		"ib1-app":  s.clientWith(t, "ib1-app", roleExtension(t, nil, roleAggregator, roleSigner)),
		"psd2-tpp": s.clientWith(t, "psd2-tpp", testpki.PSD2QCStatements(t, ai, "Financial Conduct Authority", "GB-FCA")),
		"stranger": s.clientWith(t, "stranger", roleExtension(t, nil, roleAuditor),
			testpki.PSD2QCStatements(t, ic, "Financial Conduct Authority", "GB-FCA")),
		"flattened": s.clientWith(t, "flattened", roleExtension(t, asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1, 1}, roleAggregator, roleSigner),
			testpki.PSD2QCStatementsFlattened(t, append(ai, pi...), "Financial Conduct Authority", "GB-FCA")),
		"mismatched": s.clientWith(t, "mismatched", testpki.PSD2QCStatements(t,
			[]testpki.PSD2Role{{OID: ai[0].OID, Name: "PSP_PI"}, {OID: pi[0].OID, Name: "PSP_AI"}}, "Financial Conduct Authority", "GB-FCA")),
	}
	keyIDs := []string{"rsa.key", "sealed.key", "qwac.key", "qwac-ec.key"}

	// The answers to sign, to makeRequest to the bank and to makeRequest
	// to bank.test, which no rule allows. 400: allowed, but the key has no
	// certificate to be a QWAC.
	want := []struct {
		client, key         string
		sign, bank, refused int
	}{
		{"teller", "rsa.key", 200, 403, 403},
		{"teller", "sealed.key", 200, 403, 403},
		{"teller", "qwac.key", 403, 200, 403},
		{"teller", "qwac-ec.key", 403, 403, 403},
		{"ib1-app", "rsa.key", 403, 400, 403},
		{"ib1-app", "sealed.key", 200, 400, 403},
		{"ib1-app", "qwac.key", 403, 200, 403},
		{"ib1-app", "qwac-ec.key", 403, 200, 403},
		{"psd2-tpp", "rsa.key", 200, 400, 403},
		{"psd2-tpp", "sealed.key", 403, 403, 403},
		{"psd2-tpp", "qwac.key", 403, 403, 403},
		{"psd2-tpp", "qwac-ec.key", notForSigning, 200, 403}, // allowed, but a QWAC signs no data
		{"stranger", "rsa.key", 403, 403, 403},
		{"stranger", "sealed.key", 403, 403, 403},
		{"stranger", "qwac.key", 403, 403, 403},
		{"stranger", "qwac-ec.key", 403, 403, 403},
		{"flattened", "rsa.key", 403, 403, 403},
		{"flattened", "sealed.key", 403, 403, 403},
		{"flattened", "qwac.key", 403, 403, 403},
		{"flattened", "qwac-ec.key", 403, 403, 403},
		{"mismatched", "rsa.key", 403, 403, 403},
		{"mismatched", "sealed.key", 403, 403, 403},
		{"mismatched", "qwac.key", 403, 403, 403},
		{"mismatched", "qwac-ec.key", 403, 403, 403},
	}
	seen := map[string]bool{}
	for _, w := range want {
		seen[w.client+" "+w.key] = true
		t.Run(w.client+"/"+w.key, func(t *testing.T) {
			c := clients[w.client]
			checkSign(t, s, c, w.client, w.key, w.sign)
			checkMakeRequest(t, s, c, w.client, w.key, bank.URL, w.bank)
			checkMakeRequest(t, s, c, w.client, w.key, other, w.refused)
		})
	}
	if len(seen) != len(clients)*len(keyIDs) {
		t.Errorf("the table has %d distinct cells, want %d clients × %d keys", len(seen), len(clients), len(keyIDs))
	}
}

// notForSigning is the want of a /sign the policy allows with a QWAC: 403
// for the key's purpose.
const notForSigning = -403

// checkSign signs with key as client cn and checks the answer: a
// signature the key's public key verifies, or a refusal naming the client.
func checkSign(t *testing.T, s *stack, c *http.Client, cn, key string, want int) {
	t.Helper()
	status, body := post(t, c, s.url+"/sign", fmt.Sprintf(`{"params":{"data":"authz","key_id":%q}}`, key))
	if want == notForSigning {
		if exp := fmt.Sprintf(`{"code":403,"message":"Key not for signing","data":"key \"%s\" is a QWAC (purpose qwac): it authenticates brokerd to banks in makeRequest and signs no data"}`, key); status != 403 || body != exp {
			t.Errorf("sign with a QWAC: %d %s, want 403 %s", status, body, exp)
		}
		return
	}
	if status != want {
		t.Errorf("sign: %d %s, want %d", status, body, want)
		return
	}
	if want == http.StatusForbidden {
		if exp := fmt.Sprintf(`{"code":403,"message":"Forbidden","data":"client CN=%s may not use key \"%s\" for sign"}`, cn, key); body != exp {
			t.Errorf("sign refused with\n%s\nwant\n%s", body, exp)
		}
		return
	}
	var r struct {
		Result string `json:"result"`
	}
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Errorf("sign: %s: %v", body, err)
		return
	}
	sig, err := base64.StdEncoding.DecodeString(r.Result)
	if err == nil {
		err = verify(t, s, key, sig)
	}
	if err != nil {
		t.Errorf("sign: %s: %v", body, err)
	}
}

// verify checks sig over "authz" with key's public key (RS256 or ES256
// raw r||s, the defaults for the key's type).
func verify(t *testing.T, s *stack, key string, sig []byte) error {
	signer, err := s.keys.Signer(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("authz"))
	switch pub := signer.Public().(type) {
	case *rsa.PublicKey:
		return rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig)
	case *ecdsa.PublicKey:
		half := len(sig) / 2
		if len(sig) != 64 || !ecdsa.Verify(pub, sum[:], new(big.Int).SetBytes(sig[:half]), new(big.Int).SetBytes(sig[half:])) {
			return fmt.Errorf("ES256 signature %x does not verify", sig)
		}
		return nil
	}
	t.Fatalf("key %s: unexpected type %T", key, signer.Public())
	return nil
}

// checkMakeRequest calls origin with key as the QWAC, as client cn, and
// checks the answer: the bank's echo of the QWAC, a 400 for a key
// without a certificate, or a refusal naming the client.
func checkMakeRequest(t *testing.T, s *stack, c *http.Client, cn, key, origin string, want int) {
	t.Helper()
	qwac := fmt.Sprintf(`,"tls":{"cert_path":%q,"key_path":%q}`, key, key)
	status, r, body := mr(t, s, c, req("GET", origin, "/echo/authz", qwac), "")
	if status != want {
		t.Errorf("makeRequest to %s: %d %s, want %d", origin, status, body, want)
		return
	}
	var exp string
	switch want {
	case http.StatusOK:
		var e mockbank.Echo
		if err := json.Unmarshal([]byte(r.Response), &e); err != nil || r.Status != 200 || e.ClientCN != key || e.Target != "/echo/authz" {
			t.Errorf("makeRequest to %s: bank status %d, echo %+v (%v); want 200 from client %s", origin, r.Status, e, err, key)
		}
		return
	case http.StatusBadRequest:
		exp = fmt.Sprintf(`{"code":400,"message":"Bad request","data":"key \"%s\" has no certificate: attach the QWAC with brokerd key cert"}`, key)
	case http.StatusForbidden:
		exp = fmt.Sprintf(`{"code":403,"message":"Forbidden","data":"client CN=%s may not makeRequest to %s with key \"%s\""}`, cn, origin, key)
	}
	if body != exp {
		t.Errorf("makeRequest to %s answered\n%s\nwant\n%s", origin, body, exp)
	}
}

// clientWith returns an HTTP client whose certificate, issued by the
// stack's client CA, names cn and carries the extensions extra.
func (s *stack) clientWith(tb testing.TB, cn string, extra ...pkix.Extension) *http.Client {
	tb.Helper()
	cert, key := s.ca.IssueKey(tb, testpki.Leaf{Subject: pkix.Name{CommonName: cn}, ExtUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, Extra: extra})
	pool := x509.NewCertPool()
	pool.AddCert(s.ca.Cert)
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost", Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key}}},
	}}
}

// roleExtension is policy.RoleExtension, failing the test on error.
func roleExtension(tb testing.TB, oid asn1.ObjectIdentifier, roles ...string) pkix.Extension {
	tb.Helper()
	ext, err := policy.RoleExtension(oid, roles)
	if err != nil {
		tb.Fatal(err)
	}
	return ext
}
