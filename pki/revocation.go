package pki

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/brokerd/brokerd/internal/dn"
	"github.com/brokerd/brokerd/internal/watch"
)

// ErrRevoked is returned for a chain that holds a revoked certificate.
var ErrRevoked = errors.New("certificate revoked")

// Revocations decides whether a verified client chain holds a revoked
// certificate: one that brokerd's CA revoked, or one listed in the CRL
// files of other CAs (bring-your-own PKI, intermediates included). The
// set in force is swapped whole: checks never wait for an update.
type Revocations struct {
	files []string
	log   *slog.Logger
	cur   atomic.Pointer[revSet]
}

type revSet struct {
	ca    *x509.Certificate    // brokerd's CA, nil with a BYO PKI
	own   map[string]time.Time // serial hex → revoked at
	crls  []indexedCRL
	stamp watch.Stamp // of the CRL files as loaded
	// verified caches the CRLs' signature checks: CRL and issuer → ok.
	// It goes with the CRLs it is about.
	verified *sync.Map
}

// NewRevocations loads the CRL files (PEM or DER, one or more CRLs each);
// a file that does not load is an error.
func NewRevocations(files []string, log *slog.Logger) (*Revocations, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Revocations{files: files, log: log}
	r.cur.Store(&revSet{own: map[string]time.Time{}, verified: &sync.Map{}})
	if err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// SetOwn replaces brokerd's own revocations: certificates issued by ca
// with these serials.
func (r *Revocations) SetOwn(ca *x509.Certificate, serials map[string]time.Time) {
	r.update(func(s *revSet) { s.ca, s.own = ca, serials })
}

// update swaps in a copy of the set in force changed by fn.
func (r *Revocations) update(fn func(*revSet)) {
	for {
		old := r.cur.Load()
		next := *old
		fn(&next)
		if r.cur.CompareAndSwap(old, &next) {
			return
		}
	}
}

// Reload reads the CRL files again; on error the CRLs in force stay.
func (r *Revocations) Reload() error {
	stamp := watch.StampOf(r.files...)
	var crls []indexedCRL
	for _, f := range r.files {
		cs, err := readCRLs(f)
		if err != nil {
			r.update(func(s *revSet) { s.stamp = stamp }) // not retried until it changes again
			return err
		}
		for _, c := range cs {
			if !c.NextUpdate.IsZero() && time.Now().After(c.NextUpdate) {
				r.log.Warn("CRL is past its next update; applying it anyway", "file", f,
					"issuer", dn.Format(c.RawIssuer), "next_update", c.NextUpdate)
			}
		}
		for _, c := range cs {
			crls = append(crls, index(c))
		}
	}
	r.update(func(s *revSet) { s.crls, s.stamp, s.verified = crls, stamp, &sync.Map{} })
	if len(r.files) > 0 {
		r.log.Info("CRLs loaded", "files", len(r.files), "crls", len(crls))
	}
	return nil
}

// Watch reloads the CRL files when they change, until ctx ends, and tells
// onReload (when set) the outcome.
func (r *Revocations) Watch(ctx context.Context, interval time.Duration, onReload func(error)) {
	if len(r.files) == 0 {
		return
	}
	watch.Poll(ctx, watch.Options{Paths: r.files, Interval: interval, Seen: func() watch.Stamp { return r.cur.Load().stamp },
		Reload: r.Reload, OnReload: onReload, What: "CRL file", Log: r.log})
}

// Check returns an error wrapping ErrRevoked when a certificate of the
// verified chain (leaf first, trust anchor last) is revoked.
func (r *Revocations) Check(chain []*x509.Certificate) error {
	set := r.cur.Load()
	for i := 0; i+1 < len(chain); i++ {
		c, issuer := chain[i], chain[i+1]
		serial := SerialHex(c)
		what := func() string {
			if i == 0 {
				return "client certificate"
			}
			return fmt.Sprintf("certificate of CA %q in the client's chain", dn.Format(c.RawSubject))
		}
		if set.ca != nil && sameCA(issuer, set.ca) {
			if at, ok := set.own[serial]; ok {
				return fmt.Errorf("%w: %s (serial %s) revoked on %s", ErrRevoked, what(), serial, at.UTC().Format(time.RFC3339))
			}
		}
		for _, crl := range set.crls {
			at, ok := crl.revoked[serial]
			if !ok || !bytes.Equal(crl.RawIssuer, c.RawIssuer) || !r.signedBy(set, crl.RevocationList, issuer) {
				continue
			}
			return fmt.Errorf("%w: %s (serial %s) is on the CRL of %q since %s", ErrRevoked, what(), serial,
				dn.Format(crl.RawIssuer), at.UTC().Format(time.RFC3339))
		}
	}
	return nil
}

// indexedCRL is a CRL with its entries by serial (SerialHex): checks run
// on every handshake and request, CRLs may list thousands.
type indexedCRL struct {
	*x509.RevocationList
	revoked map[string]time.Time
}

func index(crl *x509.RevocationList) indexedCRL {
	ic := indexedCRL{crl, make(map[string]time.Time, len(crl.RevokedCertificateEntries))}
	for _, e := range crl.RevokedCertificateEntries {
		ic.revoked[fmt.Sprintf("%x", e.SerialNumber)] = e.RevocationTime
	}
	return ic
}

// signedBy checks (once) that crl was signed by issuer; a CRL that
// claims an issuer it was not signed by is ignored, and said so.
func (r *Revocations) signedBy(set *revSet, crl *x509.RevocationList, issuer *x509.Certificate) bool {
	type key struct {
		crl    *x509.RevocationList
		issuer string
	}
	k := key{crl, string(issuer.Raw)}
	if ok, seen := set.verified.Load(k); seen {
		return ok.(bool)
	}
	err := crl.CheckSignatureFrom(issuer)
	if err != nil {
		r.log.Warn("CRL not signed by the CA it names; ignored for that CA", "issuer", dn.Format(crl.RawIssuer), "err", err)
	}
	set.verified.Store(k, err == nil)
	return err == nil
}

// readCRLs reads the CRLs of a PEM file (blocks "X509 CRL") or a DER file.
func readCRLs(path string) ([]*x509.RevocationList, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pki: CRL file: %w", err)
	}
	if !bytes.Contains(data, []byte("-----BEGIN")) {
		crl, err := x509.ParseRevocationList(data)
		if err != nil {
			return nil, fmt.Errorf("pki: CRL file %s: %w", path, err)
		}
		return []*x509.RevocationList{crl}, nil
	}
	var out []*x509.RevocationList
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "X509 CRL" {
			continue
		}
		crl, err := x509.ParseRevocationList(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("pki: CRL file %s: CRL %d: %w", path, len(out)+1, err)
		}
		out = append(out, crl)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("pki: CRL file %s: no CRL in it", path)
	}
	return out, nil
}

// CRL makes the CA's CRL of the serials given, valid until nextUpdate.
func (a *Authority) CRL(revoked map[string]time.Time, number int64, now, nextUpdate time.Time) ([]byte, error) {
	tmpl := &x509.RevocationList{Number: big.NewInt(number), ThisUpdate: now, NextUpdate: nextUpdate}
	for serial, at := range revoked {
		n, ok := new(big.Int).SetString(serial, 16)
		if !ok {
			return nil, fmt.Errorf("pki: CRL: serial %q is not hex", serial)
		}
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: n, RevocationTime: at})
	}
	slices.SortFunc(tmpl.RevokedCertificateEntries, func(a, b x509.RevocationListEntry) int { return a.SerialNumber.Cmp(b.SerialNumber) })
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, a.Cert, a.Signer)
	if err != nil {
		return nil, fmt.Errorf("pki: CRL: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), nil
}
