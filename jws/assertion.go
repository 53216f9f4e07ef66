package jws

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/brokerd/brokerd/internal/certs"
)

// Assertion lifetimes: DefaultLifetime when none is asked, at most
// MaxLifetime (an assertion is a bearer credential until it expires).
const (
	DefaultLifetime = 5 * time.Minute
	MaxLifetime     = time.Hour
)

// Assertion is an RFC 7523 client assertion to make.
type Assertion struct {
	ClientID, Audience string
	// Lifetime is exp - iat; 0 means DefaultLifetime.
	Lifetime time.Duration
	Now      time.Time
}

// assertionClaims are the claims of a private_key_jwt (RFC 7523 section
// 3, OpenID Connect Core section 9).
type assertionClaims struct {
	Issuer   string `json:"iss"`
	Subject  string `json:"sub"`
	Audience string `json:"aud"`
	ID       string `json:"jti"`
	IssuedAt int64  `json:"iat"`
	Expiry   int64  `json:"exp"`
}

// ClientAssertion signs a private_key_jwt with alg: iss = sub = the client
// id, aud, a random jti, iat, exp; in the header typ JWT, kid (the key's
// configured kid, else the certificate's x5t#S256) and x5t#S256.
func ClientAssertion(k Key, alg jose.SignatureAlgorithm, a Assertion) (string, error) {
	switch {
	case a.ClientID == "":
		return "", refuse("client_id is empty")
	case a.Audience == "":
		return "", refuse("audience is empty")
	case a.Lifetime < 0 || a.Lifetime > MaxLifetime:
		return "", refuse("lifetime_s must be 1 to %d seconds", int(MaxLifetime.Seconds()))
	case a.Lifetime == 0:
		a.Lifetime = DefaultLifetime
	}
	kid, err := defaultKID(k)
	if err != nil {
		return "", err
	}
	opts := (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid)
	if len(k.Chain) > 0 {
		opts = opts.WithHeader("x5t#S256", certs.X5tS256(k.Chain[0]))
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: opaque{k: k, alg: alg}}, opts)
	if err != nil {
		return "", fmt.Errorf("jws: new signer: %w", err)
	}
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", fmt.Errorf("jws: jti: %w", err)
	}
	c := assertionClaims{Issuer: a.ClientID, Subject: a.ClientID, Audience: a.Audience, ID: hex.EncodeToString(id[:]),
		IssuedAt: a.Now.Unix(), Expiry: a.Now.Add(a.Lifetime).Unix()}
	out, err := jwt.Signed(signer).Claims(c).Serialize()
	if err != nil {
		return "", fmt.Errorf("jws: sign client assertion: %w", err)
	}
	return out, nil
}
