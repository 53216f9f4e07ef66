package daemon

import (
	"context"
	"crypto"
	"crypto/sha256"
	"fmt"

	"github.com/brokerd/brokerd/keys"
)

// KeyCheck is the outcome of test-signing with one key.
type KeyCheck struct {
	ID    string `json:"id"`
	Kind  string `json:"kind"`
	Alg   string `json:"algorithm"`
	Error string `json:"error,omitempty"`
}

// CheckKeys signs a test digest with every key and reports each outcome;
// err is set when the registry cannot be listed.
func (s *State) CheckKeys(ctx context.Context) ([]KeyCheck, error) {
	infos, err := s.Keys.List()
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	digest := sha256.Sum256([]byte("brokerd config check"))
	out := make([]KeyCheck, 0, len(infos))
	for _, i := range infos {
		kc := KeyCheck{ID: i.ID, Kind: string(i.Kind), Alg: string(i.Algorithm)}
		signer, err := s.Keys.Signer(ctx, i.ID)
		if err == nil {
			_, _, err = keys.SignDigest(ctx, signer, digest[:], "", crypto.SHA256)
		}
		if err != nil {
			kc.Error = err.Error()
		}
		out = append(out, kc)
	}
	return out, nil
}
