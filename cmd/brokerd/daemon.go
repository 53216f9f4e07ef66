package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"strconv"
	"sync"
	"time"

	"github.com/brokerd/brokerd/admin"
	"github.com/brokerd/brokerd/internal/certs"
	"github.com/brokerd/brokerd/pki"
)

// fileKind names the files the daemon watches that commands change.
type fileKind int

const (
	policyFile fileKind = iota
	trustDir
)

// daemonState is what commands that come through the admin socket reach
// of the running daemon: its state, and ways to put changes in force.
type daemonState struct {
	s         *state
	reloaders map[fileKind]func() error
	// revoked applies brokerd's CA's revocations at once.
	revoked func()
	// reloadTLS puts the TLS files in force, and has the renewal
	// schedule look at the new server certificate.
	reloadTLS func() error
}

func (d *daemonState) reload(k fileKind) error { return d.reloaders[k]() }

// startAdmin opens the admin socket: mode 0660, group cfg.Admin.Group
// when it exists (else root only, and a warning).
func startAdmin(ctx context.Context, s *state, d *daemonState, log *slog.Logger) (*admin.Server, error) {
	gid := -1
	if g, err := user.LookupGroup(s.cfg.Admin.Group); err == nil {
		gid, _ = strconv.Atoi(g.Gid)
	} else {
		log.Warn("admin group does not exist: only root may use the admin socket", "group", s.cfg.Admin.Group)
	}
	l, err := admin.Listen(s.cfg.Admin.Socket, gid)
	if err != nil {
		return nil, err
	}
	log.Info("admin socket ready", "path", s.cfg.Admin.Socket, "group", s.cfg.Admin.Group)
	return admin.Serve(ctx, l, admin.RootOrGroup(gid), adminHandler(d), log), nil
}

// ownRevocations puts brokerd's CA's revocations in force. mu keeps two
// of these (an admin command's, a SIGHUP's) from storing out of order.
func ownRevocations(mu *sync.Mutex, s *state, ca *pki.Authority, rev *pki.Revocations) error {
	if ca == nil {
		return nil
	}
	mu.Lock()
	defer mu.Unlock()
	serials, err := pki.NewRegistry(s.st).RevokedSerials()
	if err != nil {
		return err
	}
	rev.SetOwn(ca.Cert, serials)
	return nil
}

// tlsServer is what renewal needs of the API server.
type tlsServer interface {
	Reload() error
	Leaf() *x509.Certificate
}

// maintainPKI renews the server certificate RenewBefore its end and signs
// the CRL again halfway through its validity, while ctx lasts; a failure
// is retried a minute later. changed says the server certificate was
// replaced.
func maintainPKI(ctx context.Context, s *state, ca *pki.Authority, srv tlsServer, record func(op, keyID, detail string, err error),
	changed <-chan struct{}, log *slog.Logger) {
	for {
		wait := 12 * time.Hour
		if err := renewServerCert(ctx, s, ca, srv, record, &wait); err != nil {
			log.Error("server certificate renewal", "err", err)
			wait = time.Minute
		}
		if err := refreshCRL(s, ca, &wait); err != nil {
			log.Error("CRL", "err", err)
			wait = time.Minute
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-changed: // a new server certificate: when is it due?
			t.Stop()
		case <-t.C:
		}
	}
}

// renewServerCert renews a server certificate of brokerd's CA that is
// due, puts it in force, and lowers *wait to when the next one is due.
// A certificate from another CA is left alone.
func renewServerCert(ctx context.Context, s *state, ca *pki.Authority, srv tlsServer, record func(op, keyID, detail string, err error), wait *time.Duration) error {
	chain, err := certs.ReadFile(s.cfg.API.TLSCert)
	if err != nil {
		return err
	}
	cur := chain[0]
	if cur.CheckSignatureFrom(ca.Cert) != nil {
		return nil
	}
	due := cur.NotAfter.Add(-s.cfg.PKI.RenewBefore.Duration)
	if d := time.Until(due); d > 0 {
		if !srv.Leaf().Equal(cur) {
			// A renewal written but not put in force: try again.
			if err := srv.Reload(); err != nil {
				return err
			}
		}
		*wait = min(*wait, d)
		return nil
	}
	next, err := issueServerCert(ctx, s, ca, time.Now())
	if err != nil {
		record("admin.tls.renew", s.cfg.API.TLSKey, "renewing server certificate serial "+pki.SerialHex(cur), err)
		return err
	}
	err = srv.Reload()
	record("admin.tls.renew", s.cfg.API.TLSKey, fmt.Sprintf("server certificate serial %s for %v until %s, replacing serial %s",
		pki.SerialHex(next), s.cfg.PKI.ServerNames, next.NotAfter.UTC().Format(time.RFC3339), pki.SerialHex(cur)), err)
	if err != nil {
		return err
	}
	*wait = min(*wait, time.Until(next.NotAfter.Add(-s.cfg.PKI.RenewBefore.Duration)))
	return nil
}

// refreshCRL signs tls/crl.pem again when half its validity has passed
// (or it is missing), and lowers *wait to when that is next due.
func refreshCRL(s *state, ca *pki.Authority, wait *time.Duration) error {
	half := s.cfg.PKI.CRLValidity.Duration / 2
	if data, err := os.ReadFile(crlPath(s.cfg)); err == nil {
		if block, _ := pem.Decode(data); block != nil {
			if crl, err := x509.ParseRevocationList(block.Bytes); err == nil {
				if d := time.Until(crl.ThisUpdate.Add(half)); d > 0 {
					*wait = min(*wait, d)
					return nil
				}
			}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := writeCRL(s, ca, time.Now()); err != nil {
		return err
	}
	*wait = min(*wait, half)
	return nil
}
