// Package mockbank is a bank's open-banking API for tests: a real TLS
// server on loopback that requires a client certificate from a test QTSP
// CA (a QWAC), records the raw requests it gets, and answers the ways
// banks do (redirects, compression, ZIP files, latin-1 text, repeated
// headers, slow and large answers), and checks Berlin Group request
// signatures (/bg/).
package mockbank

import (
	"archive/zip"
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/brokerd/brokerd/internal/testpki"
)

// Bank is a running mock bank.
type Bank struct {
	// URL is https://127.0.0.1:PORT.
	URL string
	// CA issued the bank's server certificate; QTSP is the CA whose
	// client certificates the bank accepts.
	CA, QTSP *testpki.CA
	Cert     *x509.Certificate

	srv           *http.Server
	full, resumed atomic.Int64
	requests      atomic.Int64
	// arrived is closed and replaced at every request, for WaitRequests.
	arrivedMu sync.Mutex
	arrived   chan struct{}
}

// Options configure Start.
type Options struct {
	// ClientAuth is the client certificate requirement; default
	// tls.RequireAndVerifyClientCert.
	ClientAuth tls.ClientAuthType
	// MinVersion and MaxVersion bound TLS; default 1.2 and 1.3.
	MinVersion, MaxVersion uint16
}

// captured is the raw bytes read on one connection since its last answer.
type captured struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

type captureConn struct {
	net.Conn
	c *captured
}

func (c captureConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.c.mu.Lock()
	c.c.buf.Write(p[:n])
	c.c.mu.Unlock()
	return n, err
}

// captureListener terminates TLS itself and records the plaintext the
// HTTP server reads (net/http only knows the raw request as a map).
type captureListener struct {
	net.Listener
	cfg *tls.Config
}

func (l captureListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return captureConn{Conn: tls.Server(c, l.cfg), c: &captured{}}, nil
}

type ctxKey struct{}

// connInfo is what a handler knows of its connection.
type connInfo struct {
	c   *captured
	tls *tls.Conn
}

// Start runs a bank on 127.0.0.1 until the test ends.
func Start(t testing.TB, opts Options) *Bank {
	t.Helper()
	b := &Bank{CA: testpki.NewCA(t, "Test Bank CA"), QTSP: testpki.NewCA(t, "Test QTSP"), arrived: make(chan struct{})}
	cert, key := b.CA.IssueKey(t, testpki.Leaf{Subject: pkix.Name{CommonName: "api.bank.test"},
		IPs: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"}, ExtUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	b.Cert = cert
	if opts.ClientAuth == 0 {
		opts.ClientAuth = tls.RequireAndVerifyClientCert
	}
	if opts.MinVersion == 0 {
		opts.MinVersion = tls.VersionTLS12
	}
	pool := x509.NewCertPool()
	pool.AddCert(b.QTSP.Cert)
	cfg := &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key}},
		ClientAuth:   opts.ClientAuth, ClientCAs: pool,
		MinVersion: opts.MinVersion, MaxVersion: opts.MaxVersion,
		NextProtos: []string{"http/1.1"},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if cs.DidResume {
				b.resumed.Add(1)
			} else {
				b.full.Add(1)
			}
			return nil
		},
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.URL = "https://" + l.Addr().String()
	routes := b.routes()
	b.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b.requests.Add(1)
			b.arrivedMu.Lock()
			close(b.arrived)
			b.arrived = make(chan struct{})
			b.arrivedMu.Unlock()
			routes.ServeHTTP(w, r)
		}),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			cc := c.(captureConn)
			return context.WithValue(ctx, ctxKey{}, connInfo{c: cc.c, tls: cc.Conn.(*tls.Conn)})
		},
	}
	go b.srv.Serve(captureListener{Listener: l, cfg: cfg})
	t.Cleanup(func() { b.srv.Close() })
	return b
}

// Requests reports the requests the bank received.
func (b *Bank) Requests() int64 { return b.requests.Load() }

// WaitRequests waits until the bank has received n requests in all, or
// the timeout passed; it reports whether it had.
func (b *Bank) WaitRequests(n int64, timeout time.Duration) bool {
	deadline := time.After(timeout)
	for {
		b.arrivedMu.Lock()
		arrived := b.arrived
		b.arrivedMu.Unlock()
		if b.requests.Load() >= n {
			return true
		}
		select {
		case <-arrived:
		case <-deadline:
			return false
		}
	}
}

// Handshakes reports the full and resumed TLS handshakes the bank saw.
func (b *Bank) Handshakes() (full, resumed int64) { return b.full.Load(), b.resumed.Load() }

// Echo is what /echo answers: the request as the bank received it.
type Echo struct {
	Method     string     `json:"method"`
	Target     string     `json:"target"`
	Headers    [][]string `json:"headers"` // raw, in order, with their case
	Body       string     `json:"body"`
	ClientCN   string     `json:"client_cn"`
	TLSVersion uint16     `json:"tls_version"`
}

// peer is the client certificate's CN and the TLS version.
func peer(r *http.Request) (string, uint16) {
	info := r.Context().Value(ctxKey{}).(connInfo)
	st := info.tls.ConnectionState()
	if len(st.PeerCertificates) == 0 {
		return "", st.Version
	}
	return st.PeerCertificates[0].Subject.CommonName, st.Version
}

func rawRequest(r *http.Request) (target string, headers [][]string) {
	c := r.Context().Value(ctxKey{}).(connInfo).c
	c.mu.Lock()
	raw := c.buf.String()
	c.buf.Reset()
	c.mu.Unlock()
	head, _, _ := strings.Cut(raw, "\r\n\r\n")
	lines := strings.Split(head, "\r\n")
	if f := strings.Fields(lines[0]); len(f) == 3 {
		target = f[1]
	}
	for _, l := range lines[1:] {
		if k, v, ok := strings.Cut(l, ":"); ok {
			headers = append(headers, []string{k, latin1(strings.TrimSpace(v))})
		}
	}
	return target, headers
}

func (b *Bank) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/echo/", func(w http.ResponseWriter, r *http.Request) {
		target, headers := rawRequest(r)
		body, _ := io.ReadAll(r.Body)
		e := Echo{Method: r.Method, Target: target, Headers: headers, Body: string(body)}
		e.ClientCN, e.TLSVersion = peer(r)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(e)
	})
	mux.HandleFunc("/bg/", b.serveBerlin)
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		rawRequest(r)
		code, _ := strconv.Atoi(r.URL.Query().Get("code"))
		if code == 0 {
			code = http.StatusFound
		}
		if c := r.URL.Query().Get("cookie"); c != "" {
			http.SetCookie(w, &http.Cookie{Name: "session", Value: c, Path: "/"})
		}
		w.Header().Set("Location", r.URL.Query().Get("to"))
		w.WriteHeader(code)
	})
	mux.HandleFunc("/loop", func(w http.ResponseWriter, r *http.Request) {
		rawRequest(r)
		http.Redirect(w, r, "/loop", http.StatusFound)
	})
	mux.HandleFunc("/encoded", serveEncoded)
	mux.HandleFunc("/zip", serveZip)
	mux.HandleFunc("/latin1", func(w http.ResponseWriter, r *http.Request) {
		rawRequest(r)
		w.Header().Set("Content-Type", "text/plain; charset=iso-8859-1")
		w.Write([]byte("K\xe4ytt\xf6"))
	})
	mux.HandleFunc("/binary", func(w http.ResponseWriter, r *http.Request) {
		rawRequest(r)
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte{0xff, 0xfe, 0x00})
	})
	mux.HandleFunc("/status/", func(w http.ResponseWriter, r *http.Request) {
		rawRequest(r)
		code, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/status/"))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"tppMessages":[{"category":"ERROR","code":"STATUS_%d"}]}`, code)
	})
	mux.HandleFunc("/headers", serveRawHeaders)
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		rawRequest(r)
		d, _ := time.ParseDuration(r.URL.Query().Get("for"))
		select {
		case <-time.After(d):
		case <-r.Context().Done():
		}
		io.WriteString(w, "late")
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		rawRequest(r)
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		bw := bufio.NewWriter(w)
		for i := 0; i < n; i++ {
			bw.WriteByte('x')
		}
		bw.Flush()
	})
	mux.HandleFunc("/bigheader", func(w http.ResponseWriter, r *http.Request) {
		rawRequest(r)
		w.Header().Set("X-Big", strings.Repeat("h", 100<<10))
		io.WriteString(w, "ok")
	})
	return mux
}

// serveEncoded answers with a body in the Content-Encoding that ?enc= names.
func serveEncoded(w http.ResponseWriter, r *http.Request) {
	rawRequest(r)
	text := []byte(`{"transactions":[{"amount":"12.50","currency":"EUR"}]}`)
	var buf bytes.Buffer
	switch enc := r.URL.Query().Get("enc"); enc {
	case "gzip":
		zw := gzip.NewWriter(&buf)
		zw.Write(text)
		zw.Close()
	case "deflate":
		zw := zlib.NewWriter(&buf)
		zw.Write(text)
		zw.Close()
	case "deflate-raw":
		zw, _ := flate.NewWriter(&buf, flate.DefaultCompression)
		zw.Write(text)
		zw.Close()
		enc = "deflate"
	case "br":
		buf.Write(text)
	}
	w.Header().Set("Content-Encoding", strings.TrimSuffix(r.URL.Query().Get("enc"), "-raw"))
	w.Header().Set("Content-Type", "application/json")
	w.Write(buf.Bytes())
}

// serveZip answers with a zip archive of two statements.
func serveZip(w http.ResponseWriter, r *http.Request) {
	rawRequest(r)
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	f, _ := zw.Create("statement.xml")
	f.Write([]byte("<statement>first</statement>"))
	f, _ = zw.Create("other.xml")
	f.Write([]byte("<statement>second</statement>"))
	zw.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Write(buf.Bytes())
}

// serveRawHeaders writes its response raw: repeated, mixed-case header names.
func serveRawHeaders(w http.ResponseWriter, r *http.Request) {
	rawRequest(r)
	// Written raw: net/http would sort and canonicalise the names.
	conn, bufrw, err := w.(http.Hijacker).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	body := `{"ok":true}`
	fmt.Fprintf(bufrw, "HTTP/1.1 200 OK\r\nx-request-id: abc\r\nSet-Cookie: a=1; Path=/\r\nContent-Type: application/json\r\n"+
		"Set-Cookie: b=2; Path=/\r\nX-Mixed-CASE: V\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
	bufrw.Flush()
}

// latin1 reads header bytes as ISO-8859-1, HTTP's historical charset, so
// that the bytes a client sent show in the JSON answer.
func latin1(s string) string {
	r := make([]rune, len(s))
	for i := 0; i < len(s); i++ {
		r[i] = rune(s[i])
	}
	return string(r)
}
