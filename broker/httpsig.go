package broker

import (
	"context"
	"crypto"
	"crypto/x509"
	"net/http"
	"strings"
	"time"

	"github.com/brokerd/brokerd/audit"
	"github.com/brokerd/brokerd/httpsig"
	"github.com/brokerd/brokerd/keys"
	"github.com/brokerd/brokerd/policy"
)

// signHTTP is POST /httpsig: {"params": {"key_id", "method", "path",
// "headers", "body", "signed_headers", "request_target",
// "hash_algorithm"}} → {"result": {"headers": [[k, v]...]}}, the headers
// to send: the request's, X-Request-ID and Date when missing, Digest,
// Signature and TPP-Signature-Certificate (Berlin Group NextGenPSD2).
func (a *API) signHTTP(w http.ResponseWriter, r *http.Request) {
	p, ok := decodeRequest(a, w, r, policy.OpHTTPSig, parseHTTPSig)
	if !ok {
		return
	}
	logOf(r).add("op", policy.OpHTTPSig, "key_id", p.KeyID, "sig_method", p.Method, "body_sha256", sha256Hex([]byte(p.Body)), "body_len", len(p.Body))
	rec := audit.Record{Op: string(policy.OpHTTPSig), KeyID: p.KeyID, Target: audit.Truncate(p.Method+" "+pathOnly(p.Path), audit.MaxField)}
	req := httpsig.Request{Method: p.Method, Target: p.Path, Headers: latin1Headers(p.Headers), Body: []byte(p.Body),
		SignedHeaders: p.SignedHeaders, RequestTarget: p.RequestTarget, Now: time.Now()}
	res, ok := a.httpSign(w, r, p.KeyID, p.Hash, req, &rec)
	if !ok {
		return
	}
	b := []byte(`{"result":{"headers":[`)
	for i, kv := range res.Headers {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(pyQuote(append(b, '['), latin1String(kv[0])), ',')
		b = append(pyQuote(b, latin1String(kv[1])), ']')
	}
	a.reply(w, r, rec, success(append(b, "]}}"...)))
}

// httpSign signs req with key keyID after the checks of every helper; on
// failure it answers (on record) and returns false. On success rec is
// complete but not yet recorded: the caller records it with its answer.
func (a *API) httpSign(w http.ResponseWriter, r *http.Request, keyID string, h crypto.Hash, req httpsig.Request, rec *audit.Record) (httpsig.Result, bool) {
	k, ok := a.useKey(w, r, policy.OpHTTPSig, keyID, rec)
	if !ok {
		return httpsig.Result{}, false
	}
	res, err := httpsig.Sign(httpsig.Key{Cert: k.leaf(), Hash: h, Sign: a.signString(r.Context(), k, h)}, req)
	if err != nil {
		logOf(r).add("error", err.Error())
		a.reply(w, r, *rec, failure(helperError(err, httpsig.ErrRequest, keyID)))
		return httpsig.Result{}, false
	}
	rec.Alg, rec.DataSHA256 = res.Algorithm, sha256Hex([]byte(res.SigningString))
	rec.Detail = audit.Truncate("headers "+strings.Join(res.Signed, " "), audit.MaxField)
	return res, true
}

// leaf is the key's certificate; nil for none.
func (k signingKey) leaf() *x509.Certificate {
	if len(k.chain) == 0 {
		return nil
	}
	return k.chain[0]
}

// signString signs a signing string with RSASSA-PKCS1-v1_5 (RS) and h.
func (a *API) signString(ctx context.Context, k signingKey, h crypto.Hash) func([]byte) ([]byte, error) {
	return func(data []byte) ([]byte, error) { return a.signData(ctx, k, data, keys.RS, h) }
}

// signBankCall adds the Berlin Group headers to a makeRequest that asks
// for them, over the exact target, headers and body sent, and records the
// signature. The QSealC signs; the QWAC, if any, carries the TLS.
func (a *API) signBankCall(w http.ResponseWriter, r *http.Request, c *bankCall) bool {
	s := c.p.Sign
	if s == nil {
		return true
	}
	rec := audit.Record{Op: string(policy.OpHTTPSig), KeyID: s.KeyID, Target: c.rec.Target}
	req := httpsig.Request{Method: c.req.Method, Target: c.req.URL.RequestURI(), Headers: c.req.Header, Body: c.req.Body,
		SignedHeaders: s.SignedHeaders, RequestTarget: s.RequestTarget, Now: time.Now()}
	res, ok := a.httpSign(w, r, s.KeyID, s.Hash, req, &rec)
	if !ok {
		return false
	}
	rec.Status = http.StatusOK
	if err := a.record(r, rec); err != nil {
		writeError(w, auditUnavailable)
		return false
	}
	c.req.Header = res.Headers
	return true
}

// pathOnly is a request target without its query (queries may carry
// personal data; records keep paths).
func pathOnly(target string) string {
	path, _, _ := strings.Cut(target, "?")
	return path
}

// latin1String decodes latin-1 bytes back to the string a client sent.
func latin1String(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		b.WriteRune(rune(s[i]))
	}
	return b.String()
}
