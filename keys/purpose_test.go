package keys_test

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"testing"

	"github.com/brokerd/brokerd/internal/testpki"
	"github.com/brokerd/brokerd/keys"
	"github.com/brokerd/brokerd/store"
	"github.com/brokerd/brokerd/tpm"
)

// TestInferPurpose: the QcType statement decides, else the clientAuth
// extended key usage; no certificate means any.
func TestInferPurpose(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t, "QTSP")
	issue := func(eku []x509.ExtKeyUsage, ext ...pkix.Extension) *x509.Certificate {
		c, _ := ca.IssueKey(t, testpki.Leaf{Subject: pkix.Name{CommonName: "k"}, ExtUsage: eku, Extra: ext})
		return c
	}
	email := []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}
	client := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	cases := []struct {
		name string
		leaf *x509.Certificate
		want keys.Purpose
	}{
		{"no certificate", nil, keys.PurposeAny},
		{"QcType web", issue(email, testpki.QcTypeStatements(t, "web")), keys.PurposeQWAC},
		{"QcType eseal", issue(client, testpki.QcTypeStatements(t, "eseal")), keys.PurposeQSeal}, // the statement beats the EKU
		{"QcType esign", issue(email, testpki.QcTypeStatements(t, "esign")), keys.PurposeQSeal},
		{"PSD2 QWAC", issue(email, testpki.PSD2QCStatements(t, testpki.PSD2Roles(t, "PSP_AI"), "FCA", "GB-FCA")), keys.PurposeQWAC},
		{"clientAuth", issue(client), keys.PurposeQWAC},
		{"no clientAuth", issue(email), keys.PurposeQSeal},
	}
	for _, c := range cases {
		if got := keys.InferPurpose(c.leaf); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
	for _, p := range []string{"qwac", "qseal", "any"} {
		if got, err := keys.ParsePurpose(p); err != nil || string(got) != p {
			t.Errorf("ParsePurpose(%q) = %q, %v", p, got, err)
		}
	}
	if _, err := keys.ParsePurpose("tls"); err == nil {
		t.Error("ParsePurpose accepted tls")
	}
}

// TestPurposeFollowsTheCertificate: a key is any until a certificate says
// more, an operator's choice stands over certificates until cleared, and a
// state from before purposes gets them inferred and stored at open.
func TestPurposeFollowsTheCertificate(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ca := testpki.NewCA(t, "QTSP")
	info, _, err := e.m.Create(ctx, "k", tpm.P256, keys.CreateOptions{})
	if err != nil || info.Purpose != keys.PurposeAny {
		t.Fatalf("new key: %+v %v", info, err)
	}
	signer, _ := e.m.Signer(ctx, "k")
	qwac := ca.Issue(t, signer.Public(), testpki.Leaf{Subject: pkix.Name{CommonName: "k"}, ExtUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	seal := ca.Issue(t, signer.Public(), testpki.Leaf{Subject: pkix.Name{CommonName: "k"}, Extra: []pkix.Extension{testpki.QcTypeStatements(t, "eseal")}})
	steps := []struct {
		do   func() (keys.Info, error)
		want keys.Purpose
		set  bool
	}{
		{func() (keys.Info, error) { return e.m.AttachCert("k", []*x509.Certificate{qwac}, nil) }, keys.PurposeQWAC, false},
		{func() (keys.Info, error) { return e.m.SetPurpose("k", keys.PurposeAny) }, keys.PurposeAny, true},
		{func() (keys.Info, error) { return e.m.AttachCert("k", []*x509.Certificate{seal}, nil) }, keys.PurposeAny, true},
		{func() (keys.Info, error) { return e.m.SetPurpose("k", "") }, keys.PurposeQSeal, false},
	}
	for i, s := range steps {
		info, err := s.do()
		if err != nil || info.Purpose != s.want || info.PurposeSet != s.set {
			t.Fatalf("step %d: %s set=%v, %v; want %s set=%v", i, info.Purpose, info.PurposeSet, err, s.want, s.set)
		}
	}
	// A record of before: no purpose stored.
	sr, _ := e.st.Key("k")
	var rec map[string]any
	json.Unmarshal(sr.Data, &rec)
	delete(rec, "purpose")
	delete(rec, "purpose_set")
	sr.Data, _ = json.Marshal(rec)
	if err := e.st.PutKey(store.KeyRecord{ID: sr.ID, Aliases: sr.Aliases, Data: sr.Data}, true); err != nil {
		t.Fatal(err)
	}
	m, err := keys.Open(e.dev, e.st, keys.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if info, _ := m.Info("k"); info.Purpose != keys.PurposeQSeal {
		t.Fatalf("migrated: %s", info.Purpose)
	}
	sr, _ = e.st.Key("k")
	if json.Unmarshal(sr.Data, &rec); rec["purpose"] != "qseal" {
		t.Fatalf("the inferred purpose was not stored: %v", rec["purpose"])
	}
}
