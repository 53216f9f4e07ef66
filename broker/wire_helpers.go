package broker

import (
	"crypto"
	"encoding/json"
	"strconv"

	"github.com/brokerd/brokerd/jws"
)

// The signing helpers' requests take the reference's envelope and error
// rules: {"params": {...}}, unknown fields ignored, 422 {"detail": [...]}
// in pydantic's words for what does not fit the model.

// jwsParams is a validated POST /jws request.
type jwsParams struct {
	KeyID   string
	Payload string
	Profile jws.Profile
	Family  string // RS, PS, ES; "" = by key type
	Hash    crypto.Hash
	Header  map[string]json.RawMessage
	X5C     bool
}

var profileMembers = func() []string {
	out := make([]string, len(jws.Profiles))
	for i, p := range jws.Profiles {
		out[i] = string(p)
	}
	return out
}()

// parseJWS validates {"params": {"key_id": str, "payload": str, "profile":
// "compact"|"detached"|"ob-3.1.3"|"ob-3.1.4"|null = "compact",
// "crypto_algorithm": "PS"|"RS"|"ES"|null, "hash_algorithm":
// "SHA256"|"SHA512"|null = "SHA256", "header": {...}|null, "x5c": bool =
// false}}.
func parseJWS(body []byte, contentType string) (jwsParams, validationErrors, error) {
	out := jwsParams{Profile: jws.Compact, Hash: crypto.SHA256}
	rq, verrs, err := decodeParams(body, contentType)
	if rq == nil {
		return out, verrs, err
	}
	v, params, pv, ploc := &rq.v, rq.params, rq.raw, rq.loc
	out.KeyID = v.requiredStr(params, pv, "key_id", ploc)
	out.Payload = v.requiredStr(params, pv, "payload", ploc)
	if f, ok := params.get("profile"); ok && f.kind != kNull {
		p, _ := v.enum(f, profileMembers, at(ploc, "profile"))
		out.Profile = jws.Profile(p)
	}
	out.Family, out.Hash = v.algorithms(params, ploc)
	if f, ok := params.get("header"); ok && f.kind != kNull {
		out.Header = v.claims(f, at(ploc, "header"))
	}
	if f, ok := params.get("x5c"); ok {
		out.X5C, _ = v.boolean(f, at(ploc, "x5c"))
	}
	return out, v.errs, nil
}

// jwsVerifyParams is a validated POST /jws/verify request.
type jwsVerifyParams struct {
	JWS         string
	Payload     *string
	Certificate string // PEM; "" when a JWKS is given
	JWKS        []byte // JSON; nil when a certificate is given
}

// parseJWSVerify validates {"params": {"jws": str, "payload": str|null,
// "certificate": str|null, "jwks": {...}|null}}.
func parseJWSVerify(body []byte, contentType string) (jwsVerifyParams, validationErrors, error) {
	var out jwsVerifyParams
	rq, verrs, err := decodeParams(body, contentType)
	if rq == nil {
		return out, verrs, err
	}
	v, params, pv, ploc := &rq.v, rq.params, rq.raw, rq.loc
	out.JWS = v.requiredStr(params, pv, "jws", ploc)
	if f, ok := params.get("payload"); ok && f.kind != kNull {
		if s, ok := v.str(f, at(ploc, "payload")); ok {
			out.Payload = &s
		}
	}
	if f, ok := params.get("certificate"); ok && f.kind != kNull {
		out.Certificate, _ = v.str(f, at(ploc, "certificate"))
	}
	if f, ok := params.get("jwks"); ok && f.kind != kNull {
		if v.dict(f, at(ploc, "jwks")) {
			out.JWKS = pyEncode(nil, f)
		}
	}
	return out, v.errs, nil
}

// assertionParams is a validated POST /clientAssertion request.
type assertionParams struct {
	KeyID, ClientID, Audience string
	LifetimeS                 int64 // 0: the default (a 0 given is kept as -1, out of range)
	Family                    string
	Hash                      crypto.Hash
}

// parseClientAssertion validates {"params": {"key_id": str, "client_id":
// str, "audience": str, "lifetime_s": int|null, "crypto_algorithm",
// "hash_algorithm"}}.
func parseClientAssertion(body []byte, contentType string) (assertionParams, validationErrors, error) {
	out := assertionParams{Hash: crypto.SHA256}
	rq, verrs, err := decodeParams(body, contentType)
	if rq == nil {
		return out, verrs, err
	}
	v, params, pv, ploc := &rq.v, rq.params, rq.raw, rq.loc
	out.KeyID = v.requiredStr(params, pv, "key_id", ploc)
	out.ClientID = v.requiredStr(params, pv, "client_id", ploc)
	out.Audience = v.requiredStr(params, pv, "audience", ploc)
	if f, ok := params.get("lifetime_s"); ok && f.kind != kNull {
		out.LifetimeS, _ = v.integer(f, at(ploc, "lifetime_s"))
		if out.LifetimeS == 0 {
			out.LifetimeS = -1 // given as 0: refused as out of range, not taken for the default
		}
	}
	out.Family, out.Hash = v.algorithms(params, ploc)
	return out, v.errs, nil
}

// requiredStr validates a required str field.
func (v *validator) requiredStr(o *object, parent *value, name string, loc []locPart) string {
	f, ok := v.required(o, parent, name, loc)
	if !ok {
		return ""
	}
	s, _ := v.str(f, at(loc, name))
	return s
}

// algorithms validates crypto_algorithm and hash_algorithm as /sign does.
func (v *validator) algorithms(params *object, ploc []locPart) (string, crypto.Hash) {
	family, h := "", crypto.SHA256
	if f, ok := params.get("crypto_algorithm"); ok && f.kind != kNull {
		family, _ = v.enum(f, cryptoMembers, at(ploc, "crypto_algorithm"))
	}
	if f, ok := params.get("hash_algorithm"); ok && f.kind != kNull {
		if s, ok := v.enum(f, hashMembers, at(ploc, "hash_algorithm")); ok && s == "SHA512" {
			h = crypto.SHA512
		}
	}
	return family, h
}

// dict validates a dict field.
func (v *validator) dict(in *value, loc []locPart) bool {
	if in.kind != kObject {
		v.add("dict_type", "Input should be a valid dictionary", in, "", loc)
		return false
	}
	return true
}

// claims validates a dict of JSON values (JWS header claims): each value
// must be plain JSON (no NaN or Infinity, which Python's decoder takes).
func (v *validator) claims(in *value, loc []locPart) map[string]json.RawMessage {
	if !v.dict(in, loc) {
		return nil
	}
	out := make(map[string]json.RawMessage, len(in.obj.keys))
	for _, k := range in.obj.keys {
		raw := pyEncode(nil, in.obj.vals[k])
		if !json.Valid(raw) {
			v.add("value_error", "Value error, not a JSON value (NaN and Infinity are none)", in.obj.vals[k], `{"error":{}}`, at(loc, k))
			continue
		}
		out[k] = raw
	}
	return out
}

// integer validates an int field (pydantic lax: integral floats and
// numeric strings too).
func (v *validator) integer(in *value, loc []locPart) (int64, bool) {
	switch in.kind {
	case kInt:
		if n, err := strconv.ParseInt(in.num, 10, 64); err == nil {
			return n, true
		}
	case kFloat:
		if in.f == float64(int64(in.f)) {
			return int64(in.f), true
		}
		v.add("int_from_float", "Input should be a valid integer, got a number with a fractional part", in, "", loc)
		return 0, false
	case kString:
		if n, err := strconv.ParseInt(in.s, 10, 64); err == nil {
			return n, true
		}
		v.add("int_parsing", "Input should be a valid integer, unable to parse string as an integer", in, "", loc)
		return 0, false
	}
	v.add("int_type", "Input should be a valid integer", in, "", loc)
	return 0, false
}

// httpSigParams is a validated POST /httpsig request.
type httpSigParams struct {
	KeyID, Method, Path string
	Headers             [][2]string
	Body                string
	SignedHeaders       []string // nil: the default list
	RequestTarget       bool
	Hash                crypto.Hash
}

// parseHTTPSig validates {"params": {"key_id": str, "method": str, "path":
// str, "headers": [[k, v]...] = [], "body": str = "", "signed_headers":
// [str...]|null, "request_target": bool = false, "hash_algorithm":
// "SHA256"|"SHA512"|null}}. Headers are checked as makeRequest's are.
func parseHTTPSig(body []byte, contentType string) (httpSigParams, validationErrors, error) {
	out := httpSigParams{Hash: crypto.SHA256}
	rq, verrs, err := decodeParams(body, contentType)
	if rq == nil {
		return out, verrs, err
	}
	v, params, pv, ploc := &rq.v, rq.params, rq.raw, rq.loc
	out.KeyID = v.requiredStr(params, pv, "key_id", ploc)
	out.Method = v.requiredStr(params, pv, "method", ploc)
	out.Path = v.requiredStr(params, pv, "path", ploc)
	if f, ok := params.get("headers"); ok {
		out.Headers = v.headers(f, at(ploc, "headers"))
	}
	if f, ok := params.get("body"); ok {
		out.Body, _ = v.str(f, at(ploc, "body"))
	}
	out.SignedHeaders, out.RequestTarget = v.signedHeaders(params, ploc)
	_, out.Hash = v.algorithms(params, ploc)
	return out, v.errs, nil
}

// bankSignParams is makeRequest's sign option.
type bankSignParams struct {
	KeyID         string
	SignedHeaders []string
	RequestTarget bool
	Hash          crypto.Hash
}

// bankSign validates {"key_id": str, "scheme": "berlin-group",
// "signed_headers": [str...]|null, "request_target": bool = false,
// "hash_algorithm": "SHA256"|"SHA512"|null}.
func (v *validator) bankSign(in *value, loc []locPart) *bankSignParams {
	o := v.model(in, loc)
	if o == nil {
		return nil
	}
	out := &bankSignParams{Hash: crypto.SHA256}
	out.KeyID = v.requiredStr(o, in, "key_id", loc)
	if f, ok := v.required(o, in, "scheme", loc); ok {
		v.enum(f, []string{"berlin-group"}, at(loc, "scheme"))
	}
	out.SignedHeaders, out.RequestTarget = v.signedHeaders(o, loc)
	_, out.Hash = v.algorithms(o, loc)
	return out
}

// headers validates list[tuple[str, str]] of HTTP headers.
func (v *validator) headers(in *value, loc []locPart) [][2]string {
	hs, ok := v.pairs(in, loc)
	if !ok {
		return nil
	}
	for i, h := range hs {
		v.header(h, in.arr[i], at(loc, i))
	}
	return hs
}

// signedHeaders validates signed_headers (list[str]|null) and
// request_target (bool = false).
func (v *validator) signedHeaders(o *object, loc []locPart) ([]string, bool) {
	var names []string
	if f, ok := o.get("signed_headers"); ok && f.kind != kNull {
		sloc := at(loc, "signed_headers")
		if f.kind != kArray {
			v.add("list_type", "Input should be a valid list", f, "", sloc)
		} else {
			names = []string{}
			for i, item := range f.arr {
				if s, ok := v.str(item, at(sloc, i)); ok {
					names = append(names, s)
				}
			}
		}
	}
	var target bool
	if f, ok := o.get("request_target"); ok {
		target, _ = v.boolean(f, at(loc, "request_target"))
	}
	return names, target
}
