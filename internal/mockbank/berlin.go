package mockbank

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Verdict is the answer of /bg/: whether the request's Berlin Group
// signature holds over what the bank received, and what it covered.
type Verdict struct {
	Verified bool     `json:"verified"`
	Reason   string   `json:"reason,omitempty"`
	Signed   []string `json:"signed,omitempty"`
	// SigningString is what the bank rebuilt and checked.
	SigningString string `json:"signing_string,omitempty"`
	ClientCN      string `json:"client_cn"`
}

// serveBerlin checks a NextGenPSD2 signature the way an ASPSP does, with
// code of its own (not brokerd's): the Digest recomputed over the body
// received, keyId against the certificate sent, the signing string
// rebuilt from the raw request line and headers, the signature verified
// with the certificate's key. 200 when it holds, 400 with the reason.
func (b *Bank) serveBerlin(w http.ResponseWriter, r *http.Request) {
	target, headers := rawRequest(r)
	body, _ := io.ReadAll(r.Body)
	v := Verdict{}
	v.ClientCN, _ = peer(r)
	v.Signed, v.SigningString, v.Reason = checkBerlin(r.Method, target, headers, body)
	v.Verified = v.Reason == ""
	w.Header().Set("Content-Type", "application/json")
	if !v.Verified {
		w.WriteHeader(http.StatusBadRequest)
	}
	json.NewEncoder(w).Encode(v)
}

func checkBerlin(method, target string, headers [][]string, body []byte) (signed []string, ss, reason string) {
	get := func(name string) (string, error) {
		var found []string
		for _, kv := range headers {
			if strings.EqualFold(kv[0], name) {
				found = append(found, kv[1])
			}
		}
		if len(found) != 1 {
			return "", fmt.Errorf("header %s received %d times", name, len(found))
		}
		return found[0], nil
	}
	if err := checkDigest(get, body); err != nil {
		return nil, "", err.Error()
	}
	sigHeader, err := get("Signature")
	if err != nil {
		return nil, "", err.Error()
	}
	params, err := ParseSignature(sigHeader)
	if err != nil {
		return nil, "", err.Error()
	}
	certB64, err := get("TPP-Signature-Certificate")
	if err != nil {
		return nil, "", err.Error()
	}
	der, _ := base64.StdEncoding.DecodeString(certB64)
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, "", "TPP-Signature-Certificate: " + err.Error()
	}
	if want := fmt.Sprintf("SN=%X,CA=%s", cert.SerialNumber, strings.ReplaceAll(cert.Issuer.String(), " ", "%20")); params["keyId"] != want {
		return nil, "", fmt.Sprintf("keyId %q, want %q", params["keyId"], want)
	}
	signed = strings.Fields(params["headers"])
	var lines []string
	for _, n := range signed {
		if n == "(request-target)" {
			lines = append(lines, n+": "+strings.ToLower(method)+" "+target)
			continue
		}
		val, err := get(n)
		if err != nil {
			return nil, "", err.Error()
		}
		lines = append(lines, n+": "+val)
	}
	ss = strings.Join(lines, "\n")
	if err := verifyRSA(cert, params["algorithm"], ss, params["signature"]); err != nil {
		return signed, ss, err.Error()
	}
	return signed, ss, ""
}

// checkDigest recomputes the Digest header over the body received.
func checkDigest(get func(string) (string, error), body []byte) error {
	d, err := get("Digest")
	if err != nil {
		return err
	}
	var want string
	switch alg, _, _ := strings.Cut(d, "="); alg {
	case "SHA-256":
		sum := sha256.Sum256(body)
		want = "SHA-256=" + base64.StdEncoding.EncodeToString(sum[:])
	case "SHA-512":
		sum := sha512.Sum512(body)
		want = "SHA-512=" + base64.StdEncoding.EncodeToString(sum[:])
	}
	if d != want {
		return fmt.Errorf("digest %q is not the received body's", d)
	}
	return nil
}

func verifyRSA(cert *x509.Certificate, alg, ss, sigB64 string) error {
	h := map[string]crypto.Hash{"rsa-sha256": crypto.SHA256, "rsa-sha512": crypto.SHA512}[alg]
	pub, ok := cert.PublicKey.(*rsa.PublicKey)
	if h == 0 || !ok {
		return fmt.Errorf("algorithm %q with a %s key is not accepted", alg, cert.PublicKeyAlgorithm)
	}
	sig, err := base64.StdEncoding.DecodeString(sigB64)
	if err != nil {
		return errors.New("signature is not base64")
	}
	d := h.New()
	d.Write([]byte(ss))
	if err := rsa.VerifyPKCS1v15(pub, h, d.Sum(nil), sig); err != nil {
		return errors.New("signature does not verify")
	}
	return nil
}

// ParseSignature reads a Signature header's parameters: name="value"
// pairs separated by commas (values hold no quotes); keyId, algorithm,
// headers and signature are required, each once.
func ParseSignature(s string) (map[string]string, error) {
	out := map[string]string{}
	for s != "" {
		name, rest, ok := strings.Cut(s, `="`)
		if !ok {
			return nil, fmt.Errorf("signature header: %q is no name=\"value\"", s)
		}
		val, rest, ok := strings.Cut(rest, `"`)
		if !ok {
			return nil, fmt.Errorf("signature header: parameter %s is not closed", name)
		}
		name = strings.TrimSpace(name)
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("signature header: parameter %s twice", name)
		}
		out[name] = val
		rest = strings.TrimSpace(rest)
		if rest != "" && !strings.HasPrefix(rest, ",") {
			return nil, fmt.Errorf("signature header: %q after parameter %s", rest, name)
		}
		s = strings.TrimPrefix(rest, ",")
	}
	for _, n := range []string{"keyId", "algorithm", "headers", "signature"} {
		if _, ok := out[n]; !ok {
			return nil, fmt.Errorf("signature header: no %s", n)
		}
	}
	return out, nil
}
