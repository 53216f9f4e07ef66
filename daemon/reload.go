package daemon

import (
	"crypto/x509"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Reload puts every changed file in force, as SIGHUP does: TLS material,
// policy, bank trust, CRLs and brokerd's own revocations. A file that does
// not load is logged and audited; what was in force stays.
func (d *Daemon) Reload() {
	d.notify(daemon.SdNotifyReloading + "\n" + daemon.SdNotifyMonotonicUsec())
	if err := d.ReloadTLS(); err != nil {
		d.log.Error("reload: TLS material does not load; keeping the one in use", "err", err)
	}
	if err := d.ReloadPolicy(); err != nil {
		d.log.Error("reload: policy does not load; keeping the rules in force", "err", err)
	}
	if err := d.ReloadTrust(); err != nil {
		d.log.Error("reload: bank trust does not load; keeping the CAs in use", "err", err)
	}
	err := d.rev.Reload()
	if err != nil {
		d.log.Error("reload: CRL files do not load; keeping the CRLs in force", "err", err)
	}
	if len(d.cfg.API.CRLFiles) > 0 {
		d.crlReloaded(err)
	} else {
		d.ApplyRevocations()
	}
	d.notify(daemon.SdNotifyReady + "\n" + d.status())
}

// ReloadTLS puts the TLS files in force, audits it, and has renewal look
// at the new server certificate.
func (d *Daemon) ReloadTLS() error {
	err := d.srv.Reload()
	d.record("admin.tls.reload", "", d.tlsState(), err)
	select {
	case d.certChanged <- struct{}{}:
	default:
	}
	return err
}

// ReloadPolicy puts the policy file in force and audits it.
func (d *Daemon) ReloadPolicy() error {
	err := d.pol.Reload()
	d.policyReloaded(err)
	return err
}

// ReloadTrust puts the bank CAs in force and audits it.
func (d *Daemon) ReloadTrust() error {
	err := d.trust.Reload()
	d.trustReloaded(err)
	return err
}

// ApplyRevocations puts brokerd's CA's revocations in force at once and
// closes idle connections of revoked clients.
func (d *Daemon) ApplyRevocations() {
	if err := d.state.PKI.ApplyOwn(d.rev); err != nil {
		d.log.Error("revocation", "err", err)
	}
	n := d.srv.CloseClients(func(chain []*x509.Certificate) bool { return d.rev.Check(chain) != nil })
	d.log.Info("revocations in force", "idle_connections_closed", n)
}

func (d *Daemon) policyReloaded(err error) { d.record("admin.policy.reload", "", d.policyState(), err) }

func (d *Daemon) trustReloaded(err error) { d.record("admin.trust.reload", "", d.trustState(), err) }

// crlReloaded audits a reload of the CRL files and applies revocations.
func (d *Daemon) crlReloaded(err error) {
	d.record("admin.crl.reload", "", d.crlState(), err)
	d.ApplyRevocations()
}
