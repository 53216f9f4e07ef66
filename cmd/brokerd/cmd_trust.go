package main

import (
	"cmp"
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/brokerd/brokerd/admin"
	"github.com/brokerd/brokerd/daemon"
	"github.com/brokerd/brokerd/internal/certs"
	"github.com/brokerd/brokerd/internal/origin"
	"github.com/brokerd/brokerd/netstack/bank"
)

func cmdTrustAdd(ctx context.Context, e *env, args []string) error {
	fs := e.flags("trust add", "--ca FILE [--origin URL]",
		"Trust a CA (or chain) for banks' server certificates, on top of the system roots:\n"+
			"for every bank, or only for one origin. The next makeRequest uses it; the daemon\n"+
			"needs no restart.")
	caFile := e.path(fs, "ca", admin.Read, "CA certificate `file` (PEM; more certificates may follow)")
	originFlag := fs.String("origin", "", "trust it only for this bank `origin` scheme://host[:port]")
	if err := e.parse(fs, args, "ca"); err != nil {
		return err
	}
	cs, err := certs.ReadFiles(e.fs().ReadFile, *caFile)
	if err != nil {
		return err
	}
	scope := ""
	if *originFlag != "" {
		o, err := origin.Parse(*originFlag)
		if err != nil {
			return usagef("%v", err)
		}
		scope = o.String()
	}
	cfg, err := e.loadConfig()
	if err != nil {
		return err
	}
	fp, err := daemon.AddTrust(ctx, cfg, e.daemon, e.actor(), cs, scope)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "trusted %s (sha256 %s) for %s\n", cs[0].Subject, fp, cmp.Or(scope, "every bank"))
	return nil
}

func cmdTrustList(_ context.Context, e *env, args []string) error {
	fs := e.flags("trust list", "[--json]", "List the CAs added for banks' server certificates (the system roots apply too).")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := e.parse(fs, args); err != nil {
		return err
	}
	cfg, err := e.loadConfig()
	if err != nil {
		return err
	}
	cas, err := bank.ReadTrustDir(cfg.Bank.TrustDir)
	if err != nil {
		return err
	}
	if *asJSON {
		if cas == nil {
			cas = []bank.TrustedCA{}
		}
		return writeJSON(e.stdout, cas)
	}
	if len(cas) == 0 {
		fmt.Fprintln(e.stdout, "no CAs added: banks are checked against the system roots only")
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SHA256\tSUBJECT\tNOT AFTER\tORIGIN")
	for _, ca := range cas {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", ca.Fingerprint, ca.Subject, ca.NotAfter.Format(time.DateOnly), dash(ca.Origin))
	}
	return tw.Flush()
}

func cmdTrustRemove(ctx context.Context, e *env, args []string) error {
	fs := e.flags("trust remove", "--ca FINGERPRINT", "Stop trusting a CA added with trust add (by its SHA-256, or a unique prefix of 8 digits or more).")
	fp := fs.String("ca", "", "the CA's SHA-256 `fingerprint`")
	if err := e.parse(fs, args, "ca"); err != nil {
		return err
	}
	cfg, err := e.loadConfig()
	if err != nil {
		return err
	}
	removed, err := daemon.RemoveTrust(ctx, cfg, e.daemon, e.actor(), *fp)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "removed CA %s\n", removed)
	return nil
}
