package broker

import (
	"crypto"
	"strings"

	"github.com/brokerd/brokerd/keys"
)

// signParams is a validated POST /sign request.
type signParams struct {
	Data  string
	KeyID string
	Hash  crypto.Hash
	// Alg is "" when the client left the choice to the key type.
	Alg keys.SignAlg
}

var (
	hashMembers   = []string{"SHA256", "SHA512"}
	cryptoMembers = []string{"RS", "PS", "ES"}
)

// parseSign validates a /sign body as the reference's SignRequest model
// does: {"params": {"data": str, "key_id": str, "hash_algorithm":
// "SHA256"|"SHA512"|null = SHA256, "crypto_algorithm": "RS"|"PS"|"ES"|null}}.
// Unknown fields are ignored.
func parseSign(body []byte, contentType string) (signParams, validationErrors, error) {
	out := signParams{Hash: crypto.SHA256}
	rq, verrs, err := decodeParams(body, contentType)
	if rq == nil {
		return out, verrs, err
	}
	v, params, pv, ploc := &rq.v, rq.params, rq.raw, rq.loc
	if f, ok := v.required(params, pv, "data", ploc); ok {
		out.Data, _ = v.str(f, at(ploc, "data"))
	}
	if f, ok := v.required(params, pv, "key_id", ploc); ok {
		out.KeyID, _ = v.str(f, at(ploc, "key_id"))
	}
	if f, ok := params.get("hash_algorithm"); ok && f.kind != kNull {
		if h, ok := v.enum(f, hashMembers, at(ploc, "hash_algorithm")); ok && h == "SHA512" {
			out.Hash = crypto.SHA512
		}
	}
	if f, ok := params.get("crypto_algorithm"); ok && f.kind != kNull {
		a, _ := v.enum(f, cryptoMembers, at(ploc, "crypto_algorithm"))
		out.Alg = keys.SignAlg(a)
	}
	return out, v.errs, nil
}

// paramsRequest is a body of the reference's shape {"params": {...}}
// decoded down to its params object.
type paramsRequest struct {
	v      validator
	params *object
	raw    *value    // params as decoded, for "missing" errors
	loc    []locPart // ["body", "params"]
}

// decodeParams decodes and validates a body down to its params object; when
// that fails it returns nil and the 422 (or the 400 error).
func decodeParams(body []byte, contentType string) (*paramsRequest, validationErrors, error) {
	in, verrs, err := decodeBody(body, contentType)
	if err != nil || verrs != nil {
		return nil, verrs, err
	}
	if in == nil {
		return nil, missingBody, nil
	}
	rq := &paramsRequest{}
	loc := []locPart{"body"}
	root := rq.v.model(in, loc)
	if root == nil {
		return nil, rq.v.errs, nil
	}
	pv, ok := rq.v.required(root, in, "params", loc)
	if !ok {
		return nil, rq.v.errs, nil
	}
	rq.raw, rq.loc = pv, at(loc, "params")
	if rq.params = rq.v.model(pv, rq.loc); rq.params == nil {
		return nil, rq.v.errs, nil
	}
	return rq, nil, nil
}

// makeRequestParams is a validated POST /makeRequest request.
type makeRequestParams struct {
	Method, Origin, Path string
	Query, Headers       [][2]string
	Body                 string
	TLS                  *tlsParams // nil: no client certificate
	FollowRedirects      bool
	// Sign, when set, has brokerd sign the request itself (an extension:
	// the reference has no such field).
	Sign *bankSignParams
}

// tlsParams names the QWAC.
type tlsParams struct {
	CertPath, KeyPath string
	Version           string // "" when not pinned
}

// parseMakeRequest validates a /makeRequest body as the reference's
// MakeRequestRequest model does: {"params": {"request": {"method",
// "origin", "path", "query": [[k, v]...] = [], "headers": [[k, v]...] = [],
// "body": "" , "tls": {"cert_path", "key_path", "tls_version"} | null},
// "follow_redirects": bool | null = true}}. An explicit null for
// follow_redirects means false, as it does there. Headers that could split
// the request (CR, LF or NUL), names that are no HTTP token and values that
// do not fit latin-1 are refused here too.
func parseMakeRequest(body []byte, contentType string) (makeRequestParams, validationErrors, error) {
	out := makeRequestParams{FollowRedirects: true}
	rq, verrs, err := decodeParams(body, contentType)
	if rq == nil {
		return out, verrs, err
	}
	v, params, pv, ploc := &rq.v, rq.params, rq.raw, rq.loc
	if rv, ok := v.required(params, pv, "request", ploc); ok {
		rloc := at(ploc, "request")
		if req := v.model(rv, rloc); req != nil {
			v.request(req, rv, rloc, &out)
		}
	}
	if f, ok := params.get("follow_redirects"); ok {
		if f.kind == kNull {
			out.FollowRedirects = false
		} else {
			out.FollowRedirects, _ = v.boolean(f, at(ploc, "follow_redirects"))
		}
	}
	return out, v.errs, nil
}

// request validates MakeRequestParams into out.
func (v *validator) request(req *object, in *value, loc []locPart, out *makeRequestParams) {
	for _, f := range []struct {
		name string
		dst  *string
	}{{"method", &out.Method}, {"origin", &out.Origin}, {"path", &out.Path}} {
		if fv, ok := v.required(req, in, f.name, loc); ok {
			*f.dst, _ = v.str(fv, at(loc, f.name))
		}
	}
	if f, ok := req.get("query"); ok {
		out.Query, _ = v.pairs(f, at(loc, "query"))
	}
	if f, ok := req.get("headers"); ok {
		out.Headers = v.headers(f, at(loc, "headers"))
	}
	if f, ok := req.get("body"); ok {
		out.Body, _ = v.str(f, at(loc, "body"))
	}
	if f, ok := req.get("sign"); ok && f.kind != kNull {
		out.Sign = v.bankSign(f, at(loc, "sign"))
	}
	if f, ok := req.get("tls"); ok && f.kind != kNull {
		tloc := at(loc, "tls")
		if t := v.model(f, tloc); t != nil {
			out.TLS = &tlsParams{}
			if fv, ok := v.required(t, f, "cert_path", tloc); ok {
				out.TLS.CertPath, _ = v.str(fv, at(tloc, "cert_path"))
			}
			if fv, ok := v.required(t, f, "key_path", tloc); ok {
				out.TLS.KeyPath, _ = v.str(fv, at(tloc, "key_path"))
			}
			if fv, ok := t.get("tls_version"); ok && fv.kind != kNull {
				out.TLS.Version, _ = v.str(fv, at(tloc, "tls_version"))
			}
		}
	}
}

// header refuses what would split or corrupt the request to the bank.
func (v *validator) header(h [2]string, item *value, loc []locPart) {
	valueErr := func(j int, msg string) {
		v.add("value_error", "Value error, "+msg, item.arr[j], `{"error":{}}`, at(loc, j))
	}
	for j, s := range h {
		if strings.ContainsAny(s, "\r\n\x00") {
			valueErr(j, "Newline, carriage return or NUL detected in headers. Potential header injection attack.")
			return
		}
	}
	if !isToken(h[0]) {
		valueErr(0, "header name is not an HTTP token")
		return
	}
	for _, r := range h[1] {
		if r > 0xff {
			valueErr(1, "header value cannot be encoded as latin-1")
			return
		}
	}
}

// isToken reports whether s is an HTTP token (RFC 9110 section 5.6.2).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}
