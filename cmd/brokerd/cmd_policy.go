package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/brokerd/brokerd/admin"
	"github.com/brokerd/brokerd/daemon"
	"github.com/brokerd/brokerd/internal/certs"
	"github.com/brokerd/brokerd/internal/origin"
	"github.com/brokerd/brokerd/policy"
)

func cmdPolicyAllow(ctx context.Context, e *env, args []string) error {
	fs := e.flags("policy allow", "--name RULE MATCHER... --keys ID[,ID...]|'*' --ops OP[,OP...]|'*' [--origin URL]... [--allow-private]",
		"Add or replace rule RULE. A client matching every matcher given may use the keys for\n"+
			"the operations (sign, makeRequest, jws, httpsig, clientAssertion) and, for\n"+
			"makeRequest, the origins. The daemon applies the change within a second.\n"+
			"Default deny: what no rule allows is refused.")
	r := policy.Rule{}
	fs.StringVar(&r.Name, "name", "", "rule `name`")
	fs.StringVar(&r.CN, "cn", "", "match the client certificate's subject `CN`")
	fs.StringVar(&r.SANURI, "san-uri", "", "match a URI subject alternative `name`")
	fs.StringVar(&r.SANDNS, "san-dns", "", "match a DNS subject alternative `name`")
	fs.StringVar(&r.OU, "ou", "", "match an organisational `unit` of the subject")
	fs.StringVar(&r.Fingerprint, "fingerprint", "", "match the certificate's SHA-256 `fingerprint` (hex)")
	fs.StringVar(&r.Issuer, "issuer", "", "match a CA in the client's chain by subject `DN`")
	fs.StringVar(&r.Role, "role", "", "match a role `URL` in the certificate's role extension (policy.role_oid; Icebreaker One ib1Roles by default)")
	fs.StringVar(&r.PSD2Role, "psd2-role", "", "match a PSD2 `role` in the certificate's QCStatement (ETSI TS 119 495): PSP_AS, PSP_PI, PSP_AI or PSP_IC")
	fs.BoolVar(&r.AnyClient, "any-client", false, "match any client with a verified certificate")
	keyList := fs.String("keys", "", "key `ids` (comma-separated) or '*'")
	opList := fs.String("ops", "", "`operations` (sign, makeRequest, jws, httpsig, clientAssertion; comma-separated) or '*'")
	var origins multiFlag
	fs.Var(&origins, "origin", "bank `origin` scheme://host[:port] for makeRequest; host may start with *. (repeatable)")
	fs.BoolVar(&r.AllowPrivate, "allow-private", false, "let makeRequest reach loopback/private addresses of these origins' literal hosts")
	if err := e.parse(fs, args, "name", "keys", "ops"); err != nil {
		return err
	}
	r.Keys, r.Ops, r.Origins = splitList(*keyList), splitList(*opList), origins
	cfg, err := e.loadConfig()
	if err != nil {
		return err
	}
	warnings, err := daemon.PutRule(ctx, cfg, e.daemon, e.actor(), r)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "rule %s saved in %s\n", r.Name, cfg.Policy.File)
	for _, w := range warnings {
		fmt.Fprintln(e.stderr, "warning: "+w)
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

func cmdPolicyList(_ context.Context, e *env, args []string) error {
	fs := e.flags("policy list", "[--json]", "List the access rules.")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := e.parse(fs, args); err != nil {
		return err
	}
	cfg, err := e.loadConfig()
	if err != nil {
		return err
	}
	p, err := policy.Load(cfg.Policy.File)
	if err != nil {
		return err
	}
	if *asJSON {
		if p.Rules == nil {
			p.Rules = []policy.Rule{}
		}
		return writeJSON(e.stdout, p.Rules)
	}
	if len(p.Rules) == 0 {
		fmt.Fprintln(e.stdout, "no rules: every request is refused")
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tMATCH\tKEYS\tOPS\tORIGINS")
	for _, r := range p.Rules {
		origins := strings.Join(r.Origins, ",")
		if r.AllowPrivate {
			origins += " (private allowed)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Name, r.Matchers(), strings.Join(r.Keys, ","), strings.Join(r.Ops, ","), dash(origins))
	}
	return tw.Flush()
}

func cmdPolicyRemove(ctx context.Context, e *env, args []string) error {
	fs := e.flags("policy remove", "--name RULE", "Remove rule RULE.")
	name := fs.String("name", "", "rule `name`")
	if err := e.parse(fs, args, "name"); err != nil {
		return err
	}
	cfg, err := e.loadConfig()
	if err != nil {
		return err
	}
	if err := daemon.RemoveRule(ctx, cfg, e.daemon, e.actor(), *name); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "rule %s removed\n", *name)
	return nil
}

// testReport is what `policy test --json` prints.
type testReport struct {
	Client   policy.Identity `json:"client"`
	Op       string          `json:"op"`
	Key      string          `json:"key"`
	KeyNames []string        `json:"key_names"`
	Origin   string          `json:"origin,omitempty"`
	policy.Decision
}

func cmdPolicyTest(_ context.Context, e *env, args []string) error {
	fs := e.flags("policy test", "--cert FILE --op OP --key ID [--origin URL] [--json]",
		"Show what the policy decides for a client certificate (PEM, leaf first, its CA chain\n"+
			"may follow): allow or deny, and the rule that made the decision. A certificate the\n"+
			"daemon refuses at the handshake (another CA, revoked) is denied. Exits 1 on deny.")
	certFile := e.path(fs, "cert", admin.Read, "client certificate `file`")
	op := fs.String("op", "", "`operation`: sign, makeRequest, jws, httpsig or clientAssertion")
	key := fs.String("key", "", "key `id` or alias")
	originFlag := fs.String("origin", "", "bank `origin` (makeRequest)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := e.parse(fs, args, "cert", "op", "key"); err != nil {
		return err
	}
	chain, err := certs.ReadFiles(e.fs().ReadFile, *certFile)
	if err != nil {
		return err
	}
	req := policy.Request{Op: policy.Op(*op), KeyNames: []string{*key}}
	if *originFlag != "" {
		if req.Origin, err = origin.Parse(*originFlag); err != nil {
			return usagef("%v", err)
		}
	}
	cfg, err := e.loadConfig()
	if err != nil {
		return err
	}
	id, req, d, err := daemon.DecidePolicy(cfg, e.daemon, chain, req)
	if err != nil {
		return err
	}
	if *asJSON {
		err = writeJSON(e.stdout, testReport{Client: id, Op: *op, Key: *key, KeyNames: req.KeyNames, Origin: *originFlag, Decision: d})
	} else {
		fmt.Fprintf(e.stdout, "%s: %s\nclient: %s\n", map[bool]string{true: "allow", false: "deny"}[d.Allow], d.Reason, id)
		for _, kv := range [][2]string{{"roles", strings.Join(id.Roles, " ")}, {"psd2 roles", strings.Join(id.PSD2Roles, " ")}, {"nca id", id.NCAID}} {
			if kv[1] != "" {
				fmt.Fprintf(e.stdout, "%s: %s\n", kv[0], kv[1])
			}
		}
	}
	if err == nil && !d.Allow {
		return errors.New("denied") // exit status 1: scripts test the decision
	}
	return err
}
