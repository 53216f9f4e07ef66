// Package certs reads PEM certificate files and public keys.
package certs

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// ParsePEM parses every certificate in PEM data, in order, skipping other
// blocks. It fails when there is none.
func ParsePEM(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate %d: %w", len(out)+1, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return out, nil
}

// ReadFile reads and parses a PEM certificate file.
func ReadFile(path string) ([]*x509.Certificate, error) {
	return ReadFiles(os.ReadFile, path)
}

// ReadFiles reads the certificates of PEM files with read, in the order
// of paths, skipping empty paths: a certificate file (leaf first, maybe
// with its chain) and a file of intermediates, say. Every file given must
// hold one certificate at least.
func ReadFiles(read func(path string) ([]byte, error), paths ...string) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for _, p := range paths {
		if p == "" {
			continue
		}
		data, err := read(p)
		if err != nil {
			return nil, err
		}
		cs, err := ParsePEM(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		out = append(out, cs...)
	}
	return out, nil
}

// EncodePEM writes certificates as PEM.
func EncodePEM(cs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range cs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// ParsePublicKey reads a public key: the first PEM "PUBLIC KEY" or
// "CERTIFICATE" block of data (a certificate stands for its key), or data
// that is one of them in DER.
func ParsePublicKey(data []byte) (crypto.PublicKey, error) {
	if block, _ := pem.Decode(data); block == nil {
		if pub, err := x509.ParsePKIXPublicKey(data); err == nil {
			return pub, nil
		}
		if c, err := x509.ParseCertificate(data); err == nil {
			return c.PublicKey, nil
		}
		return nil, errors.New("no PEM public key or certificate found, nor a DER one")
	}
	for {
		var block *pem.Block
		if block, data = pem.Decode(data); block == nil {
			return nil, errors.New("no PEM public key or certificate found")
		}
		switch block.Type {
		case "PUBLIC KEY":
			pub, err := x509.ParsePKIXPublicKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parse PUBLIC KEY: %w", err)
			}
			return pub, nil
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parse CERTIFICATE: %w", err)
			}
			return c.PublicKey, nil
		}
	}
}
