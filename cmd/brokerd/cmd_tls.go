package main

import (
	"context"
	"fmt"
	"time"

	"github.com/brokerd/brokerd/pki"
)

func cmdTLSRenew(ctx context.Context, e *env, args []string) error {
	fs := e.flags("tls renew", "",
		"Issue the server certificate again now, with brokerd's CA, for pki.server_names (change\n"+
			"them in the configuration first), valid for pki.server_validity. The running daemon\n"+
			"serves it at once. The daemon also renews it by itself pki.renew_before its end.")
	if err := e.parse(fs, args); err != nil {
		return err
	}
	s, err := e.openState()
	if err != nil {
		return err
	}
	defer s.Close()
	ca, err := s.PKI.Authority(ctx)
	if err != nil {
		return err
	}
	cert, err := s.PKI.IssueServerCert(ctx, ca, time.Now())
	if err != nil {
		return err
	}
	if e.daemon != nil {
		if err := e.daemon.ReloadTLS(); err != nil {
			return fmt.Errorf("issued serial %s, but the daemon cannot load it: %w", pki.SerialHex(cert), err)
		}
	}
	detail := fmt.Sprintf("server certificate serial %s for %v until %s", pki.SerialHex(cert), s.Config.PKI.ServerNames, cert.NotAfter.UTC().Format(time.RFC3339))
	if err := e.record(ctx, s, "admin.tls.renew", s.Config.API.TLSKey, detail); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "wrote %s: %s\n", s.Config.API.TLSCert, detail)
	return nil
}
