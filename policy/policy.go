// Package policy decides who a client is (from its verified certificate:
// subject, SANs, fingerprint, issuers, the role URLs of a role extension
// such as Icebreaker One's ib1Roles, the PSD2 roles of an ETSI TS 119 495
// QCStatement) and what it may do: which keys, which operations, which
// bank origins. Default deny: a client may do only what a rule allows.
//
// Rules live in a TOML file that brokerd's `policy` commands edit and that
// the daemon reloads when it changes. Certificate validity is not this
// package's business: netstack verified the chain before policy sees it.
package policy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/brokerd/brokerd/internal/dn"
	"github.com/brokerd/brokerd/internal/files"
	"github.com/brokerd/brokerd/internal/origin"
)

// Op is an operation a rule can allow.
type Op string

// Operations.
const (
	OpSign        Op = "sign"
	OpMakeRequest Op = "makeRequest"
	// OpJWS signs JSON Web Signatures (POST /jws) and verifies them (POST
	// /jws/verify, which uses no key).
	OpJWS Op = "jws"
	// OpHTTPSig makes Berlin Group HTTP signatures: POST /httpsig, and the
	// sign option of makeRequest (which needs makeRequest too).
	OpHTTPSig Op = "httpsig"
	// OpClientAssertion signs RFC 7523 client assertions.
	OpClientAssertion Op = "clientAssertion"
)

// Ops lists the operations rules may name.
var Ops = []Op{OpSign, OpMakeRequest, OpJWS, OpHTTPSig, OpClientAssertion}

// opNames is Ops for messages: "sign, makeRequest, ...".
func opNames() string {
	names := make([]string, len(Ops))
	for i, op := range Ops {
		names[i] = string(op)
	}
	return strings.Join(names, ", ")
}

// Rule allows clients matching all of its matchers to use its keys for its
// operations (and, for makeRequest, its origins). Empty matchers are not
// checked; a rule needs at least one matcher or AnyClient.
type Rule struct {
	Name string `toml:"name" json:"name"`

	// Matchers.
	CN          string `toml:"cn,omitempty" json:"cn,omitempty"`
	SANURI      string `toml:"san_uri,omitempty" json:"san_uri,omitempty"`
	SANDNS      string `toml:"san_dns,omitempty" json:"san_dns,omitempty"`
	OU          string `toml:"ou,omitempty" json:"ou,omitempty"`
	Fingerprint string `toml:"fingerprint,omitempty" json:"fingerprint,omitempty"`
	// Issuer matches any CA certificate in the client's verified chain.
	Issuer string `toml:"issuer,omitempty" json:"issuer,omitempty"`
	// Role matches a role URL of the client's role extension, exactly.
	Role string `toml:"role,omitempty" json:"role,omitempty"`
	// PSD2Role matches a role of the client's PSD2 QCStatement: PSP_AS,
	// PSP_PI, PSP_AI or PSP_IC (Validate upper-cases it).
	PSD2Role  string `toml:"psd2_role,omitempty" json:"psd2_role,omitempty"`
	AnyClient bool   `toml:"any_client,omitempty" json:"any_client,omitempty"`

	// Grants. "*" in Keys or Ops means all.
	Keys []string `toml:"keys" json:"keys"`
	Ops  []string `toml:"ops" json:"ops"`
	// Origins are scheme://host[:port], host may start with "*."; "*" is
	// any origin (on public addresses).
	Origins      []string `toml:"origins,omitempty" json:"origins,omitempty"`
	AllowPrivate bool     `toml:"allow_private,omitempty" json:"allow_private,omitempty"`
}

// Policy is a set of rules.
type Policy struct {
	Rules []Rule `toml:"rule" json:"rules"`
}

// Validate checks every rule and normalises matchers (fingerprints to
// lower-case hex, issuers to their canonical DN, PSD2 roles to upper
// case).
func (p *Policy) Validate() error {
	var problems []string
	seen := map[string]bool{}
	for i := range p.Rules {
		r := &p.Rules[i]
		if err := r.normalise(); err != nil {
			problems = append(problems, fmt.Sprintf("rule %q: %v", r.Name, err))
		}
		if seen[r.Name] {
			problems = append(problems, fmt.Sprintf("rule %q: name used twice", r.Name))
		}
		seen[r.Name] = true
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

func (r *Rule) normalise() error {
	if r.Name == "" || strings.ContainsAny(r.Name, " \t\n\"") {
		return errors.New("a rule needs a name without spaces or quotes")
	}
	if r.Matchers() == "" {
		return errors.New("no matcher: give one of cn, san_uri, san_dns, ou, fingerprint, issuer, role, psd2_role, or any_client")
	}
	if r.Fingerprint != "" {
		fp := strings.ToLower(strings.ReplaceAll(r.Fingerprint, ":", ""))
		if b, err := hex.DecodeString(fp); err != nil || len(b) != sha256.Size {
			return fmt.Errorf("fingerprint %q is not a SHA-256 in hex", r.Fingerprint)
		}
		r.Fingerprint = fp
	}
	if r.Issuer != "" {
		c, err := dn.Canonical(r.Issuer)
		if err != nil {
			return fmt.Errorf("issuer: %w", err)
		}
		r.Issuer = c
	}
	if r.Role != "" {
		if err := checkRoleURL(r.Role); err != nil {
			return err
		}
	}
	if r.PSD2Role != "" {
		name := strings.ToUpper(r.PSD2Role)
		if !isPSD2Role(name) {
			return fmt.Errorf("psd2_role %q is not a PSD2 role: want PSP_AS, PSP_PI, PSP_AI or PSP_IC", r.PSD2Role)
		}
		r.PSD2Role = name
	}
	if len(r.Keys) == 0 {
		return errors.New("no keys: give key ids or \"*\"")
	}
	if len(r.Ops) == 0 {
		return fmt.Errorf("no operations: give %s or \"*\"", opNames())
	}
	for _, op := range r.Ops {
		if op != "*" && !slices.Contains(Ops, Op(op)) {
			return fmt.Errorf("unknown operation %q (want %s or *)", op, opNames())
		}
	}
	origins, err := origin.Normalize(r.Origins)
	if err != nil {
		return err
	}
	if r.AllowPrivate {
		for _, o := range origins {
			if o == "*" || strings.Contains(o, "*.") {
				return fmt.Errorf("allow_private with origin %q: private addresses are opened only for exact origins, never a wildcard", o)
			}
		}
		if len(origins) == 0 {
			return errors.New("allow_private without origins: name the exact origins it opens")
		}
	}
	if r.Origins != nil {
		r.Origins = origins
	}
	return nil
}

// matches reports whether the rule's matchers all hold for id.
func (r *Rule) matches(id Identity) bool {
	return (r.CN == "" || r.CN == id.CN) &&
		(r.OU == "" || slices.Contains(id.OUs, r.OU)) &&
		(r.SANDNS == "" || slices.Contains(id.DNSNames, r.SANDNS)) &&
		(r.SANURI == "" || slices.Contains(id.URIs, r.SANURI)) &&
		(r.Fingerprint == "" || r.Fingerprint == id.Fingerprint) &&
		(r.Issuer == "" || slices.Contains(id.Issuers, r.Issuer)) &&
		(r.Role == "" || slices.Contains(id.Roles, r.Role)) &&
		(r.PSD2Role == "" || slices.Contains(id.PSD2Roles, r.PSD2Role))
}

// Matchers describes the rule's matchers the way `brokerd policy allow`
// takes them ("cn=agg role=https://directory.example/roles/x"); empty
// when it has none.
func (r *Rule) Matchers() string {
	var m []string
	for _, kv := range [][2]string{{"cn", r.CN}, {"san-uri", r.SANURI}, {"san-dns", r.SANDNS}, {"ou", r.OU},
		{"fingerprint", r.Fingerprint}, {"issuer", r.Issuer}, {"role", r.Role}, {"psd2-role", r.PSD2Role}} {
		if kv[1] != "" {
			m = append(m, kv[0]+"="+kv[1])
		}
	}
	if r.AnyClient {
		m = append(m, "any-client")
	}
	return strings.Join(m, " ")
}

func (r *Rule) allowsOp(op Op) bool {
	return slices.Contains(r.Ops, "*") || slices.Contains(r.Ops, string(op))
}

// allowsKey reports whether the rule grants one of a key's names (its id
// and aliases).
func (r *Rule) allowsKey(names []string) bool {
	if slices.Contains(r.Keys, "*") {
		return true
	}
	for _, n := range names {
		if slices.Contains(r.Keys, n) {
			return true
		}
	}
	return false
}

// Request is what a client asks to do.
type Request struct {
	Op Op
	// KeyNames are the key's id and aliases (or just the name the client
	// gave, for a key that does not exist); nil for a makeRequest without
	// a QWAC, which uses no key.
	KeyNames []string
	// Origin is the bank origin of a makeRequest; nil for other operations.
	Origin *origin.Origin
}

// Decision is the answer, with the rule that made it and why.
type Decision struct {
	Allow bool `json:"allow"`
	// Rule is the allowing rule; empty when denied.
	Rule   string `json:"rule,omitempty"`
	Reason string `json:"reason"`
	// AllowPrivate is set when the allowing rule lets makeRequest reach
	// private addresses of the origin's literal host.
	AllowPrivate bool `json:"allow_private,omitempty"`
}

// Decide applies the rules to a request by the client id. The first rule
// that grants it decides; without one, the answer is no.
func (p *Policy) Decide(id Identity, req Request) Decision {
	key := "?"
	if len(req.KeyNames) > 0 {
		key = req.KeyNames[0]
	}
	if len(key) > 256 { // a client's name: reasons stay short
		key = strings.ToValidUTF8(key[:64], "") + "…"
	}
	// Without a grant, explain with the rule that came closest: one that
	// matched the client, the operation and the key beats one that matched
	// the client and the operation, which beats one that matched the client.
	reason, closest := fmt.Sprintf("no rule matches client %s", id.Subject), 0
	miss := func(level int, format string, args ...any) {
		if level > closest {
			reason, closest = fmt.Sprintf(format, args...), level
		}
	}
	for i := range p.Rules {
		r := &p.Rules[i]
		if !r.AnyClient && !r.matches(id) {
			continue
		}
		switch {
		case !r.allowsOp(req.Op):
			miss(1, "rule %q matches the client but does not allow %s", r.Name, req.Op)
		case req.KeyNames != nil && !r.allowsKey(req.KeyNames):
			miss(2, "rule %q matches the client but does not allow key %q", r.Name, key)
		case req.Op == OpMakeRequest && !r.allowsOrigin(req.Origin):
			miss(3, "rule %q matches the client but does not allow origin %s", r.Name, req.Origin)
		default:
			return Decision{Allow: true, Rule: r.Name, AllowPrivate: r.AllowPrivate,
				Reason: fmt.Sprintf("rule %q allows %s with key %q", r.Name, req.Op, key)}
		}
	}
	return Decision{Reason: reason}
}

// Allowed reports whether any rule grants client id any operation on a key
// with these names (for listing the keys a client may use).
func (p *Policy) Allowed(id Identity, keyNames []string) bool {
	for i := range p.Rules {
		r := &p.Rules[i]
		if (r.AnyClient || r.matches(id)) && r.allowsKey(keyNames) {
			return true
		}
	}
	return false
}

// Rule returns the rule named name.
func (p *Policy) Rule(name string) (Rule, bool) {
	i := slices.IndexFunc(p.Rules, func(r Rule) bool { return r.Name == name })
	if i < 0 {
		return Rule{}, false
	}
	return p.Rules[i], true
}

// Put adds rule r, or replaces the rule with its name.
func (p *Policy) Put(r Rule) error {
	q := &Policy{Rules: slices.Clone(p.Rules)}
	if i := slices.IndexFunc(q.Rules, func(x Rule) bool { return x.Name == r.Name }); i >= 0 {
		q.Rules[i] = r
	} else {
		q.Rules = append(q.Rules, r)
	}
	if err := q.Validate(); err != nil {
		return err
	}
	p.Rules = q.Rules
	return nil
}

// Remove deletes the rule named name.
func (p *Policy) Remove(name string) error {
	i := slices.IndexFunc(p.Rules, func(r Rule) bool { return r.Name == name })
	if i < 0 {
		return fmt.Errorf("no rule named %q", name)
	}
	p.Rules = slices.Delete(p.Rules, i, i+1)
	return nil
}

// Load reads a policy file. A missing file is an empty policy: nothing is
// allowed.
func Load(path string) (*Policy, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &Policy{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	var p Policy
	md, err := toml.Decode(string(data), &p)
	if err != nil {
		return nil, fmt.Errorf("policy: %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return nil, fmt.Errorf("policy: %s: unknown keys: %v", path, und)
	}
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("policy: %s: %w", path, err)
	}
	return &p, nil
}

const fileHeader = `# brokerd access policy: which clients may use which keys, for which
# operations and bank origins. Default deny. Edited by "brokerd policy
# allow/remove"; hand edits are fine too. The daemon reloads this file when
# it changes. Reference: README.md, section "Access policy".
`

// Save writes the policy to path atomically (a temporary file renamed over
// it), so the daemon never reads half a file.
func (p *Policy) Save(path string) error {
	if err := p.Validate(); err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	var b bytes.Buffer
	b.WriteString(fileHeader)
	if len(p.Rules) > 0 {
		b.WriteString("\n")
		if err := toml.NewEncoder(&b).Encode(p); err != nil {
			return fmt.Errorf("policy: encode: %w", err)
		}
	}
	if err := files.Replace(path, b.Bytes(), 0o640); err != nil {
		return fmt.Errorf("policy: write: %w", err)
	}
	return nil
}

func (r *Rule) allowsOrigin(req *origin.Origin) bool { return origin.AnyMatches(r.Origins, req) }
