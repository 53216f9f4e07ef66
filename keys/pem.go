package keys

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"github.com/youmark/pkcs8"
)

// ParsePrivateKeyPEM parses the first private key in PEM data: PKCS #1
// ("RSA PRIVATE KEY"), SEC 1 ("EC PRIVATE KEY"), PKCS #8 ("PRIVATE KEY"),
// encrypted PKCS #8 ("ENCRYPTED PRIVATE KEY", PBES2) or legacy
// OpenSSL-encrypted PKCS #1 / SEC 1 ("Proc-Type: 4,ENCRYPTED").
func ParsePrivateKeyPEM(data []byte, password PasswordFunc) (crypto.Signer, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no PEM private key found")
		}
		switch block.Type {
		case "RSA PRIVATE KEY", "EC PRIVATE KEY", "PRIVATE KEY", "ENCRYPTED PRIVATE KEY":
			return parseKeyBlock(block, password)
		}
	}
}

func parseKeyBlock(block *pem.Block, password PasswordFunc) (crypto.Signer, error) {
	der := block.Bytes
	//lint:ignore SA1019 legacy OpenSSL encryption is what older eIDAS key files use; the reference broker reads it too.
	if x509.IsEncryptedPEMBlock(block) {
		pw, err := askPassword(password)
		if err != nil {
			return nil, err
		}
		//lint:ignore SA1019 see above.
		der, err = x509.DecryptPEMBlock(block, pw)
		if err != nil {
			return nil, fmt.Errorf("decrypt %s: %w", block.Type, ErrPassword)
		}
		defer clear(der)
	}
	var (
		key any
		err error
	)
	switch block.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(der)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(der)
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(der)
	case "ENCRYPTED PRIVATE KEY":
		pw, perr := askPassword(password)
		if perr != nil {
			return nil, perr
		}
		key, err = pkcs8.ParsePKCS8PrivateKey(der, pw)
		if err != nil && strings.Contains(err.Error(), "password") {
			return nil, fmt.Errorf("decrypt %s: %w", block.Type, ErrPassword)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", block.Type, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("parse %s: %T is not a signing key", block.Type, key)
	}
	return signer, nil
}

func askPassword(password PasswordFunc) ([]byte, error) {
	if password == nil {
		return nil, fmt.Errorf("the key is encrypted: %w", &NoPasswordError{})
	}
	pw, err := password()
	if err != nil {
		return nil, fmt.Errorf("the key is encrypted: %w", err)
	}
	if len(pw) == 0 {
		return nil, fmt.Errorf("the key is encrypted: %w", ErrPassword)
	}
	return pw, nil
}
