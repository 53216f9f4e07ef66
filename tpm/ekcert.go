package tpm

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/go-tpm/tpm2"
)

// NV indices of the EK certificates of the default (low range) EK
// templates, TCG EK Credential Profile for TPM Family 2.0, section 2.2.1.
const (
	RSAEKCertIndex = 0x01C00002
	ECCEKCertIndex = 0x01C0000A
)

// ErrNoEKCert is returned when the TPM keeps no certificate for an
// endorsement key in NV memory. Many do not: firmware TPMs (Intel PTT, AMD
// fTPM) have their maker serve it online, and some discrete chips come
// without one.
var ErrNoEKCert = errors.New("this TPM keeps no certificate for that endorsement key in its NV memory " +
	"(firmware TPMs, and some chips, have their maker serve it online)")

// ekCertIndex is where the certificate of the default EK p lives.
func ekCertIndex(p Parent) (uint32, error) {
	switch p {
	case ParentRSAEK:
		return RSAEKCertIndex, nil
	case ParentECCEK:
		return ECCEKCertIndex, nil
	}
	return 0, fmt.Errorf("tpm: %q is not an endorsement key", p)
}

// EKCertificate reads the certificate of the default endorsement key p
// from the TPM's NV memory and checks that it certifies that key. It
// returns ErrNoEKCert when there is none. It does not check who issued it:
// VerifyEKCertificate does, off the appliance, against the vendor's root.
func (d *Device) EKCertificate(ctx context.Context, p Parent) (*x509.Certificate, error) {
	index, err := ekCertIndex(p)
	if err != nil {
		return nil, err
	}
	var cert *x509.Certificate
	err = d.do(ctx, func() error {
		if cert, err = d.readEKCert(index); err != nil {
			return err
		}
		ek, err := d.ek(p)
		if err != nil {
			return err
		}
		pub, err := tpm2.Pub(*ek.pub)
		if err != nil {
			return err
		}
		if !publicEqual(pub, cert.PublicKey) {
			return fmt.Errorf("the certificate in NV index 0x%08x is not for this TPM's default %s endorsement key "+
				"(the TPM's maker certified a key of another template)", index, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("tpm: EK certificate: %w", err)
	}
	return cert, nil
}

// readEKCert reads and parses the certificate in an NV index. Token
// holder only.
func (d *Device) readEKCert(index uint32) (*x509.Certificate, error) {
	h := tpm2.TPMHandle(index)
	pub, err := tpm2.NVReadPublic{NVIndex: h}.Execute(d.tr)
	if errors.Is(err, tpm2.TPMRCHandle) {
		return nil, fmt.Errorf("NV index 0x%08x: %w", index, ErrNoEKCert)
	}
	if err != nil {
		return nil, fmt.Errorf("read NV index 0x%08x: %w", index, err)
	}
	nv, err := pub.NVPublic.Contents()
	if err != nil {
		return nil, fmt.Errorf("read NV index 0x%08x: %w", index, err)
	}
	// EK certificate indices are readable with an empty auth, their own
	// (authRead) or the owner's (ownerRead).
	auth := tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}
	if nv.Attributes.AuthRead {
		auth = tpm2.AuthHandle{Handle: h, Name: pub.NVName, Auth: tpm2.PasswordAuth(nil)}
	}
	chunk := uint16(512)
	if p, err := d.properties(tpm2.TPMPTNVBufferMax, 1); err == nil && p[tpm2.TPMPTNVBufferMax] > 0 {
		chunk = uint16(min(p[tpm2.TPMPTNVBufferMax], 1024))
	}
	var data []byte
	for off := uint16(0); off < nv.DataSize; off += chunk {
		n := min(chunk, nv.DataSize-off)
		rsp, err := tpm2.NVRead{AuthHandle: auth, NVIndex: tpm2.NamedHandle{Handle: h, Name: pub.NVName}, Size: n, Offset: off}.Execute(d.tr)
		if err != nil {
			return nil, fmt.Errorf("read NV index 0x%08x: %w", index, err)
		}
		data = append(data, rsp.Data.Buffer...)
	}
	cert, err := ParseEKCertificate(data)
	if err != nil {
		return nil, fmt.Errorf("NV index 0x%08x: %w", index, err)
	}
	return cert, nil
}

// ParseEKCertificate parses an EK certificate: PEM, or DER as TPMs store
// it (some pad the NV index after the certificate; the padding is cut).
func ParseEKCertificate(data []byte) (*x509.Certificate, error) {
	if block, _ := pem.Decode(data); block != nil {
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %q, want CERTIFICATE", block.Type)
		}
		data = block.Bytes
	}
	var raw asn1.RawValue
	rest, err := asn1.Unmarshal(data, &raw)
	if err != nil {
		return nil, fmt.Errorf("EK certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(data[:len(data)-len(rest)])
	if err != nil {
		return nil, fmt.Errorf("EK certificate: %w", err)
	}
	if cert.PublicKey == nil {
		return nil, fmt.Errorf("EK certificate: its public key algorithm (%v) is one brokerd cannot read", cert.PublicKeyAlgorithm)
	}
	return cert, nil
}

// oidSubjectAltName is the subject alternative name extension, which EK
// certificates mark critical (their subject is empty) and fill with the
// TPM's maker, model and firmware version only.
var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// VerifyEKCertificate checks that cert, a TPM's EK certificate, chains to
// a root CA among vendor (the TPM maker's root CAs, and its intermediate
// CAs if the certificate does not come with them; self-signed ones are
// the roots) and was valid at now. It returns the endorsement public key
// the certificate vouches for. Only the operator knows which vendor to
// trust: brokerd ships no roots.
func VerifyEKCertificate(cert *x509.Certificate, vendor []*x509.Certificate, now time.Time) (crypto.PublicKey, error) {
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	nroots := 0
	for _, c := range vendor {
		if c.CheckSignatureFrom(c) == nil && bytesEqual(c.RawIssuer, c.RawSubject) {
			roots.AddCert(c)
			nroots++
		} else {
			inter.AddCert(c)
		}
	}
	if nroots == 0 {
		return nil, errors.New("tpm: verify EK certificate: no root CA (a self-signed certificate) among the vendor's certificates")
	}
	// Go does not read the TCG's directory-name SAN; the chain is what
	// counts here, so that extension alone is accepted as handled.
	c := *cert
	c.UnhandledCriticalExtensions = slices.DeleteFunc(slices.Clone(c.UnhandledCriticalExtensions),
		func(oid asn1.ObjectIdentifier) bool { return oid.Equal(oidSubjectAltName) })
	_, err := c.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		return nil, fmt.Errorf("tpm: verify EK certificate (issuer %q) against the vendor's roots: %w "+
			"(if the vendor has intermediate CAs, add them to the vendor file)", cert.Issuer.String(), err)
	}
	if _, _, err := ekPublicArea(cert.PublicKey); err != nil {
		return nil, fmt.Errorf("tpm: verify EK certificate: %w", err)
	}
	return cert.PublicKey, nil
}

func bytesEqual(a, b []byte) bool { return string(a) == string(b) }

// publicEqual reports whether two public keys are the same key.
func publicEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}
