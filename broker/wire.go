package broker

import (
	"crypto"

	"github.com/brokerd/brokerd/keys"
)

// signParams is a validated POST /sign request.
type signParams struct {
	Data  string
	KeyID string
	Hash  crypto.Hash
	// Alg is "" when the client left the choice to the key type.
	Alg keys.SignAlg
}

var (
	hashMembers   = []string{"SHA256", "SHA512"}
	cryptoMembers = []string{"RS", "PS", "ES"}
)

// parseSign validates a /sign body as the reference's SignRequest model
// does: {"params": {"data": str, "key_id": str, "hash_algorithm":
// "SHA256"|"SHA512"|null = SHA256, "crypto_algorithm": "RS"|"PS"|"ES"|null}}.
// Unknown fields are ignored.
func parseSign(body []byte, contentType string) (signParams, validationErrors, error) {
	in, verrs, err := decodeBody(body, contentType)
	if err != nil || verrs != nil {
		return signParams{}, verrs, err
	}
	if in == nil {
		return signParams{}, missingBody, nil
	}
	var (
		v   validator
		out = signParams{Hash: crypto.SHA256}
		loc = []locPart{"body"}
	)
	root := v.model(in, loc)
	if root == nil {
		return out, v.errs, nil
	}
	pv, ok := v.required(root, in, "params", loc)
	if !ok {
		return out, v.errs, nil
	}
	ploc := at(loc, "params")
	params := v.model(pv, ploc)
	if params == nil {
		return out, v.errs, nil
	}
	if f, ok := v.required(params, pv, "data", ploc); ok {
		out.Data, _ = v.str(f, at(ploc, "data"))
	}
	if f, ok := v.required(params, pv, "key_id", ploc); ok {
		out.KeyID, _ = v.str(f, at(ploc, "key_id"))
	}
	if f, ok := params.get("hash_algorithm"); ok && f.kind != kNull {
		if h, ok := v.enum(f, hashMembers, at(ploc, "hash_algorithm")); ok && h == "SHA512" {
			out.Hash = crypto.SHA512
		}
	}
	if f, ok := params.get("crypto_algorithm"); ok && f.kind != kNull {
		a, _ := v.enum(f, cryptoMembers, at(ploc, "crypto_algorithm"))
		out.Alg = keys.SignAlg(a)
	}
	return out, v.errs, nil
}
