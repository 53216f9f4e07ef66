package main

import (
	"context"
	"fmt"
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
	detail, err := s.RenewServerCert(ctx, e.actor())
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "wrote %s: %s\n", s.Config.API.TLSCert, detail)
	return nil
}
