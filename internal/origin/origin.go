// Package origin parses and matches bank origins: scheme://host:port, where
// a pattern's host may start with "*." and the pattern "*" means any origin.
package origin

import (
	"fmt"
	"net/url"
	"strings"
)

// Origin is a scheme, a host (or "*.suffix" pattern) and a port.
type Origin struct {
	Scheme string
	Host   string
	Port   string
}

// Parse parses scheme://host[:port] with scheme https or http; the
// scheme's default port is made explicit.
func Parse(s string) (*Origin, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("origin %q: want scheme://host[:port] with scheme https or http", s)
	}
	return Of(u), nil
}

// Of returns the origin of a URL.
func Of(u *url.URL) *Origin {
	port := u.Port()
	if port == "" {
		port = map[string]string{"https": "443", "http": "80"}[u.Scheme]
	}
	return &Origin{Scheme: u.Scheme, Host: strings.ToLower(u.Hostname()), Port: port}
}

// String writes scheme://host:port.
func (o *Origin) String() string {
	if o == nil {
		return "(none)"
	}
	host := o.Host
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return o.Scheme + "://" + host + ":" + o.Port
}

// Matches reports whether o, a pattern, covers the concrete origin c.
func (o *Origin) Matches(c *Origin) bool {
	if c == nil || o.Scheme != c.Scheme || o.Port != c.Port {
		return false
	}
	if suffix, ok := strings.CutPrefix(o.Host, "*."); ok {
		return strings.HasSuffix(c.Host, "."+suffix)
	}
	return o.Host == c.Host
}

// Normalize checks a list of origin patterns ("*" allowed) and writes them
// as scheme://host:port.
func Normalize(list []string) ([]string, error) {
	out := make([]string, 0, len(list))
	for _, s := range list {
		if s == "*" {
			out = append(out, s)
			continue
		}
		o, err := Parse(s)
		if err != nil {
			return nil, err
		}
		out = append(out, o.String())
	}
	return out, nil
}

// AnyMatches reports whether one of the patterns (normalized) covers c.
func AnyMatches(patterns []string, c *Origin) bool {
	for _, p := range patterns {
		if p == "*" {
			return true
		}
		if o, err := Parse(p); err == nil && o.Matches(c) {
			return true
		}
	}
	return false
}
