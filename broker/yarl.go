package broker

import (
	"fmt"
	"net/url"
	"strings"
)

// The reference broker builds a bank URL with yarl: URL(origin + path)
// re-quotes the path and the query it carries, and extend_query(params)
// appends the client's query pairs. Banks that sign or hash the request
// target see those exact bytes, so they are reproduced here rather than
// left to Go's url package, which escapes differently.

const (
	unreserved        = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
	subDelimsWithoutQ = "!$'()*,"
	allowed           = unreserved + subDelimsWithoutQ
)

// quoter is yarl's _Quoter.
type quoter struct {
	safe      string // kept as is, and decoded from %XX
	protected string // kept as is, and kept as %XX
	qs        bool   // query part: space becomes '+', "+&=;" are escaped
	requote   bool   // an existing %XX is understood (else '%' is escaped)
}

var (
	pathRequoter   = quoter{safe: "@:", protected: "/+", requote: true}
	queryRequoter  = quoter{safe: "?/:@", protected: "=+&;", qs: true, requote: true}
	queryPartQuote = quoter{safe: "?/:@", qs: true}
)

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

// quote applies the quoter to s (as UTF-8 bytes).
func (q quoter) quote(s string) string {
	safe := q.safe + allowed
	if !q.qs {
		safe += "+&=;"
	}
	safe += q.protected
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '%' && q.requote {
			if i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
				u := unhex(s[i+1])<<4 | unhex(s[i+2])
				switch {
				case strings.IndexByte(q.protected, u) >= 0:
					b.WriteString(strings.ToUpper(s[i : i+3]))
				case u < 0x80 && strings.IndexByte(safe, u) >= 0:
					b.WriteByte(u)
				default:
					b.WriteString(strings.ToUpper(s[i : i+3]))
				}
				i += 2
				continue
			}
			b.WriteString("%25") // a '%' that starts no escape
			continue
		}
		if q.qs && c == ' ' {
			b.WriteByte('+')
			continue
		}
		if c < 0x80 && strings.IndexByte(safe, c) >= 0 {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}

// bankURL builds the URL the reference requests: origin + path parsed and
// re-quoted, then the query pairs appended (duplicate keys: the last value
// wins, at the first key's position).
func bankURL(origin, path string, query [][2]string) (*url.URL, error) {
	raw := origin + path
	scheme, rest, _ := strings.Cut(raw, "://")
	authority := rest
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority, rest = rest[:i], rest[i:]
	} else {
		rest = ""
	}
	u, err := url.Parse(scheme + "://" + authority)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
		return nil, fmt.Errorf("%q is not an http(s) URL: origin must be scheme://host[:port]", origin)
	}
	rest, _, _ = strings.Cut(rest, "#")
	p, q, hasQuery := strings.Cut(rest, "?")
	out := &url.URL{Scheme: u.Scheme, Host: strings.ToLower(u.Host)}
	// RawPath is sent verbatim when it is a valid encoding of Path, which
	// the quoter's output always is.
	out.RawPath = orSlash(pathRequoter.quote(p))
	if out.Path, err = url.PathUnescape(out.RawPath); err != nil {
		return nil, fmt.Errorf("path %q: %w", p, err)
	}
	if hasQuery {
		out.RawQuery = queryRequoter.quote(q)
	}
	if len(query) > 0 {
		order, last := []string{}, map[string]string{}
		for _, kv := range query {
			if _, seen := last[kv[0]]; !seen {
				order = append(order, kv[0])
			}
			last[kv[0]] = kv[1]
		}
		parts := make([]string, 0, len(order))
		for _, k := range order {
			parts = append(parts, queryPartQuote.quote(k)+"="+queryPartQuote.quote(last[k]))
		}
		extra := strings.Join(parts, "&")
		switch {
		case out.RawQuery == "":
			out.RawQuery = extra
		case strings.HasSuffix(out.RawQuery, "&"):
			out.RawQuery += extra
		default:
			out.RawQuery += "&" + extra
		}
	}
	return out, nil
}

func orSlash(p string) string {
	if p == "" {
		return "/"
	}
	return p
}
