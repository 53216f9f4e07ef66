package broker

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/encoding/ianaindex"

	"github.com/brokerd/brokerd/audit"
	"github.com/brokerd/brokerd/internal/certs"
	"github.com/brokerd/brokerd/internal/origin"
	"github.com/brokerd/brokerd/keys"
	"github.com/brokerd/brokerd/netstack/bank"
	"github.com/brokerd/brokerd/policy"
)

// BankClient calls banks.
type BankClient interface {
	Do(ctx context.Context, r *bank.Request) (*bank.Response, error)
}

// hopError stops a call at a hop the client may not reach.
type hopError struct{ apiError }

func (e *hopError) Error() string { return fmt.Sprint(e.data) }

// bankCall is one makeRequest on its way through its steps.
type bankCall struct {
	p   makeRequestParams
	id  policy.Identity
	rl  *requestLog
	req *bank.Request
	// rec is the call's audit record.
	rec audit.Record
	// The QWAC, when tls is given: the key, its names (nil without a
	// QWAC: no key is used) and the error resolving it.
	info    keys.Info
	names   []string
	qwacErr error
	// hops are the redirect targets visited (origin and path, no query).
	hops []string
}

// trail says where redirects led, for the audit record.
func (c *bankCall) trail() string {
	if len(c.hops) == 0 {
		return ""
	}
	return "; redirected to " + strings.Join(c.hops, " then ")
}

// makeRequest is POST /makeRequest: call a bank, over mutual TLS with a
// QWAC when tls is given, and return its status, headers, body and
// certificate. A bank's 4xx or 5xx is a 200 answer carrying that status.
func (a *API) makeRequest(w http.ResponseWriter, r *http.Request) {
	p, ok := decodeRequest(a, w, r, policy.OpMakeRequest, parseMakeRequest)
	if !ok {
		return
	}
	c, bad := a.newBankCall(r, p)
	if bad != nil {
		writeError(w, *bad)
		return
	}
	o := origin.Of(c.req.URL)
	if d := a.auth.Decide(c.id, policy.Request{Op: policy.OpMakeRequest, KeyNames: c.names, Origin: o}); !d.Allow {
		c.rl.add("denied", d.Reason)
		a.reply(w, r, c.rec, failure(forbiddenRequest(c.id, p.TLS, o)))
		return
	}
	if err := a.attachQWAC(r.Context(), c); err != nil {
		var ae *apiError
		if errors.As(err, &ae) {
			a.reply(w, r, c.rec, failure(*ae))
		} else {
			a.reply(w, r, c.rec, failure(operationError(err, p.TLS.KeyPath)))
		}
		return
	}
	if !a.signBankCall(w, r, c) {
		return
	}
	c.req.CheckHop = a.hopChecker(c)
	select {
	case a.bankCalls <- struct{}{}:
		defer func() { <-a.bankCalls }()
	default:
		a.reply(w, r, c.rec, failure(bankCallsFull))
		return
	}
	// The bank may act on the request (a payment): nothing leaves unless
	// the intent is on record first.
	start := c.rec
	start.Op = string(policy.OpMakeRequest) + ".start"
	if err := a.record(r, start); err != nil {
		writeError(w, auditUnavailable)
		return
	}
	a.send(w, r, c)
}

// newBankCall checks what the request asks for and prepares the call.
func (a *API) newBankCall(r *http.Request, p makeRequestParams) (*bankCall, *apiError) {
	sum := sha256.Sum256([]byte(p.Body))
	digest := hex.EncodeToString(sum[:])
	c := &bankCall{p: p, id: clientOf(r), rl: logOf(r)}
	c.rl.add("op", policy.OpMakeRequest, "bank_method", p.Method, "bank_origin", p.Origin, "bank_path", p.Path,
		"body_sha256", digest, "body_len", len(p.Body))
	u, err := bankURL(p.Origin, p.Path, p.Query)
	if err != nil {
		return nil, &apiError{status: http.StatusBadRequest, message: "Bad request", data: err.Error()}
	}
	if !isToken(p.Method) {
		return nil, &apiError{status: http.StatusBadRequest, message: "Bad request", data: fmt.Sprintf("method %q is not an HTTP token", p.Method)}
	}
	for _, kv := range p.Headers {
		if strings.EqualFold(kv[0], "Host") && !strings.EqualFold(kv[1], bank.HostHeader(u)) {
			return nil, &apiError{status: http.StatusBadRequest, message: "Bad request",
				data: fmt.Sprintf("header Host %q is not the origin's authority %q: leave it out", kv[1], bank.HostHeader(u))}
		}
	}
	c.req = &bank.Request{Method: p.Method, URL: u, Header: latin1Headers(p.Headers), Body: []byte(p.Body), FollowRedirects: p.FollowRedirects}
	// The target path without its query: queries may carry personal data.
	c.rec = audit.Record{Op: string(policy.OpMakeRequest), DataSHA256: digest, Target: p.Method + " " + origin.Of(u).String() + u.EscapedPath()}
	if p.TLS != nil {
		c.rl.add("key_id", p.TLS.KeyPath, "cert_id", p.TLS.CertPath)
		if c.req.TLSVersion, err = tlsVersion(p.TLS.Version); err != nil {
			return nil, &apiError{status: http.StatusBadRequest, message: "TLS version refused", data: err.Error()}
		}
		c.rec.KeyID = p.TLS.KeyPath
		c.info, c.names, c.qwacErr = a.resolve(p.TLS.KeyPath)
		c.rl.label(string(policy.OpMakeRequest), keyLabel(c.info))
	} else {
		c.rl.label(string(policy.OpMakeRequest), "")
	}
	return c, nil
}

// attachQWAC gives the call its QWAC, when it asks for one.
func (a *API) attachQWAC(ctx context.Context, c *bankCall) error {
	if c.p.TLS == nil {
		return nil
	}
	if c.qwacErr != nil {
		return c.qwacErr
	}
	c.rec.KeyID = c.info.ID
	if !c.info.Purpose.AllowsTLS() {
		return &apiError{status: http.StatusForbidden, message: "Key not for TLS",
			data: fmt.Sprintf("key %q is a QSealC (purpose qseal): it signs data and authenticates no TLS connection", c.info.ID)}
	}
	var err error
	c.req.Cert, c.req.CertID, err = a.qwac(ctx, c.info, c.p.TLS.CertPath)
	return err
}

// hopChecker approves the first URL and every redirect target: the QWAC's
// origin binding and the policy, again for each hop. It says whether the
// hop may reach a private address.
func (a *API) hopChecker(c *bankCall) func(*url.URL) (bank.Hop, error) {
	bindings := c.info.Origins
	first := true
	return func(hu *url.URL) (bank.Hop, error) {
		o := origin.Of(hu)
		if !first {
			c.hops = append(c.hops, o.String()+hu.EscapedPath())
		}
		first = false
		if len(bindings) > 0 && !origin.AnyMatches(bindings, o) {
			return bank.Hop{}, &hopError{apiError{status: http.StatusForbidden, message: "Destination not allowed",
				data: fmt.Sprintf("QWAC %q is bound to other origins than %s", c.info.ID, o)}}
		}
		d := a.auth.Decide(c.id, policy.Request{Op: policy.OpMakeRequest, KeyNames: c.names, Origin: o})
		if !d.Allow {
			c.rl.add("denied", d.Reason)
			return bank.Hop{}, &hopError{forbiddenRequest(c.id, c.p.TLS, o)}
		}
		return bank.Hop{AllowPrivate: d.AllowPrivate, Rule: d.Rule}, nil
	}
}

// send calls the bank and answers with what it said.
func (a *API) send(w http.ResponseWriter, r *http.Request, c *bankCall) {
	resp, err := a.bank.Do(r.Context(), c.req)
	if err != nil {
		c.rl.add("error", err.Error())
		c.rec.Detail = strings.TrimPrefix(c.trail(), "; ")
		a.reply(w, r, c.rec, failure(bankError(err, c.p.TLS)))
		return
	}
	c.rec.Detail = "bank status " + strconv.Itoa(resp.Status) + c.trail()
	text, err := responseText(resp)
	if err != nil {
		c.rl.add("error", err.Error())
		a.reply(w, r, c.rec, failure(apiError{status: http.StatusBadGateway, message: "Bad bank response", data: err.Error()}))
		return
	}
	c.rl.add("bank_status", resp.Status, "response_len", len(resp.Body))
	a.reply(w, r, c.rec, success(encodeBankResponse(resp, text)))
}

// qwac builds the TLS certificate of a QWAC: the key's chain, signed
// with by the TPM. cert_path must name the same key as key_path.
func (a *API) qwac(ctx context.Context, info keys.Info, certPath string) (*tls.Certificate, string, error) {
	certInfo, _, err := a.resolve(certPath)
	if err != nil {
		return nil, "", err
	}
	if certInfo.ID != info.ID {
		return nil, "", &apiError{status: http.StatusBadRequest, message: "Bad request",
			data: fmt.Sprintf("cert_path %q and key_path %q name different keys", certPath, info.ID)}
	}
	chain, err := a.keys.Chain(info.ID)
	if err != nil {
		return nil, "", err
	}
	if len(chain) == 0 {
		return nil, "", &apiError{status: http.StatusBadRequest, message: "Bad request",
			data: fmt.Sprintf("key %q has no certificate: attach the QWAC with brokerd key cert", info.ID)}
	}
	signer, err := a.keys.Signer(ctx, info.ID)
	if err != nil {
		return nil, "", err
	}
	c := &tls.Certificate{PrivateKey: signer, Leaf: chain[0]}
	for _, x := range chain {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c, info.ID + ":" + info.X5tS256, nil
}

func tlsVersion(v string) (uint16, error) {
	switch v {
	case "TLSv1_2":
		return tls.VersionTLS12, nil
	case "TLSv1_3":
		return tls.VersionTLS13, nil
	case "TLSv1", "TLSv1_1":
		return 0, fmt.Errorf("%s is refused: banks must be reached with TLSv1_2 or TLSv1_3", v)
	}
	return 0, nil // the reference ignores other values too
}

func forbiddenRequest(id policy.Identity, t *tlsParams, o *origin.Origin) apiError {
	what := "makeRequest to " + o.String()
	if t != nil {
		what += fmt.Sprintf(" with key %q", t.KeyPath)
	}
	return apiError{status: http.StatusForbidden, message: "Forbidden", data: fmt.Sprintf("client %s may not %s", id.Subject, what)}
}

// bankError maps a failed call to its answer.
func bankError(err error, t *tlsParams) apiError {
	var (
		he *hopError
		be *bank.Error
	)
	switch {
	case errors.As(err, &he):
		return he.apiError
	case errors.As(err, &be):
		switch be.Kind {
		case bank.Destination:
			return apiError{status: http.StatusForbidden, message: "Destination not allowed", data: be.Error()}
		case bank.Untrusted:
			return apiError{status: http.StatusBadGateway, message: "Untrusted bank certificate",
				data: be.Error() + "; trust its CA with brokerd trust add"}
		case bank.Timeout:
			return apiError{status: http.StatusGatewayTimeout, message: "Bank timeout", data: be.Error()}
		case bank.TooManyRedirects:
			return apiError{status: http.StatusBadGateway, message: "Too many redirects", data: be.Error()}
		case bank.TooLarge:
			return apiError{status: http.StatusBadGateway, message: "Bank response too large", data: be.Error()}
		case bank.Protocol:
			return apiError{status: http.StatusBadGateway, message: "Bad bank response", data: be.Error()}
		}
		return apiError{status: http.StatusBadGateway, message: "Bank unreachable", data: be.Error()}
	}
	key := ""
	if t != nil {
		key = t.KeyPath
	}
	return operationError(err, key)
}

// latin1Headers encodes header values as latin-1 bytes, as the reference
// does (validation has refused runes above U+00FF).
func latin1Headers(h [][2]string) [][2]string {
	out := make([][2]string, len(h))
	for i, kv := range h {
		b := make([]byte, 0, len(kv[1]))
		for _, r := range kv[1] {
			b = append(b, byte(r))
		}
		out[i] = [2]string{kv[0], string(b)}
	}
	return out
}

// maxUnzipped bounds the text taken out of a ZIP answer; maxZipEntries
// the entries of its directory, which a hostile bank could fill with
// millions that each cost memory to read.
const (
	maxUnzipped   = 32 << 20
	maxZipEntries = 1024
)

// zipEntries reads the number of entries from a ZIP archive's end of
// central directory record, before anything else of it is parsed; a ZIP64
// archive (more than 65,534 entries, or a directory beyond 4 GiB) counts
// as too many.
func zipEntries(body []byte) (int, error) {
	const eocdSize = 22
	from := max(0, len(body)-eocdSize-0xffff)
	i := bytes.LastIndex(body[from:], []byte("PK\x05\x06"))
	if i < 0 || len(body)-(from+i) < eocdSize {
		return 0, errors.New("no end of central directory record")
	}
	n := int(binary.LittleEndian.Uint16(body[from+i+10:]))
	if n == 0xffff {
		return 1 << 16, nil
	}
	return n, nil
}

// responseText decodes a bank's body as the reference does: a ZIP sent as
// application/octet-stream is replaced by its first file; text is decoded
// by the charset parameter, UTF-8 when there is none.
func responseText(resp *bank.Response) (string, error) {
	mt, params, _ := mime.ParseMediaType(resp.ContentType)
	body := resp.Body
	if mt == "application/octet-stream" && bytes.HasPrefix(body, []byte("PK")) {
		n, err := zipEntries(body)
		if err != nil {
			return "", fmt.Errorf("the bank's application/octet-stream answer is not a valid ZIP archive: %v", err)
		}
		if n > maxZipEntries {
			return "", fmt.Errorf("the bank's ZIP archive has %d entries or more; brokerd reads archives of up to %d", n, maxZipEntries)
		}
		zr, err := zip.NewReader(bytes.NewReader(body), int64(len(body)))
		if err != nil {
			return "", fmt.Errorf("the bank's application/octet-stream answer is not a valid ZIP archive: %v", err)
		}
		if len(zr.File) == 0 {
			return "", nil
		}
		f, err := zr.File[0].Open()
		if err != nil {
			return "", fmt.Errorf("the bank's ZIP archive: %v", err)
		}
		defer f.Close()
		if body, err = io.ReadAll(io.LimitReader(f, maxUnzipped+1)); err != nil {
			return "", fmt.Errorf("the bank's ZIP archive: %v", err)
		}
		if len(body) > maxUnzipped {
			return "", fmt.Errorf("the file in the bank's ZIP archive is larger than %d bytes", maxUnzipped)
		}
		params = nil
	}
	charset := strings.ToLower(params["charset"])
	switch charset {
	case "", "utf-8", "utf8":
		if !utf8.Valid(body) {
			return "", errors.New("the bank's answer is not valid UTF-8 text")
		}
		return string(body), nil
	}
	enc, err := ianaindex.IANA.Encoding(charset)
	if err != nil || enc == nil {
		return "", fmt.Errorf("the bank's answer uses charset %q, which brokerd cannot decode", charset)
	}
	text, err := enc.NewDecoder().Bytes(body)
	if err != nil {
		return "", fmt.Errorf("the bank's answer is not valid %s text", charset)
	}
	return string(text), nil
}

// encodeBankResponse writes {"result":{"status","headers","response",
// "certificate"}} in the reference's field order.
func encodeBankResponse(resp *bank.Response, text string) []byte {
	b := []byte(`{"result":{"status":`)
	b = strconv.AppendInt(b, int64(resp.Status), 10)
	b = append(b, `,"headers":[`...)
	for i, h := range resp.Header {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '[')
		b = pyQuote(b, headerText(h[0]))
		b = append(b, ',')
		b = pyQuote(b, headerText(h[1]))
		b = append(b, ']')
	}
	b = append(b, `],"response":`...)
	b = pyQuote(b, text)
	b = append(b, `,"certificate":`...)
	if resp.Certificate != nil {
		b = pyQuote(b, string(certs.EncodePEM(resp.Certificate)))
	} else {
		b = append(b, "null"...)
	}
	return append(b, "}}"...)
}

// headerText reads header bytes as UTF-8, else as latin-1.
func headerText(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	r := make([]rune, len(s))
	for i := 0; i < len(s); i++ {
		r[i] = rune(s[i])
	}
	return string(r)
}
