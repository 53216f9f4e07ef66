package tpm

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// FuzzParseKeyBlob: a key blob read from the state file (which a disk
// fault or a hand edit may have changed) is accepted with a public key of
// its algorithm, or refused with an error; never a panic.
func FuzzParseKeyBlob(f *testing.F) {
	for _, alg := range []Algorithm{RSA2048, P256, P384} {
		tmpl, err := keyTemplate(alg, true)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(ParentSRK), tpm2.Marshal(tmpl))
	}
	f.Add(string(ParentECCEK), []byte{0x00, 0x23})
	f.Add("nope", []byte{})
	f.Fuzz(func(t *testing.T, parent string, public []byte) {
		k, err := ParseKeyBlob(KeyBlob{Parent: Parent(parent), Public: public, Private: []byte{1}, Auth: []byte{2}})
		if err != nil {
			return
		}
		if k.public != nil && k.alg == "" {
			t.Fatalf("a key with a public key and no algorithm: %+v", k)
		}
		if len(k.name.Buffer) == 0 {
			t.Fatal("a key without a name")
		}
	})
}

// FuzzParseWrappedKey: a file given to `key import --blob` is a wrapped
// key whose JSON form reads back the same, or an error (ErrNotWrappedKey
// for what is no wrapped key at all); never a panic.
func FuzzParseWrappedKey(f *testing.F) {
	tmpl, err := keyTemplate(P256, false)
	if err != nil {
		f.Fatal(err)
	}
	good, err := json.Marshal(WrappedKey{Format: WrappedKeyFormat, Parent: ParentECCEK, ParentName: []byte{0, 11, 1},
		Public: tpm2.Marshal(tmpl), Duplicate: []byte{1, 2}, Seed: []byte{3, 4}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"format":"brokerd-wrapped-key/0"}`))
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\n"))
	f.Add([]byte(`{"format":"brokerd-wrapped-key/1","parent":"srk"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		w, err := ParseWrappedKey(data)
		if err != nil {
			if w != nil {
				t.Fatalf("an error and a key: %v", err)
			}
			return
		}
		again, err := json.Marshal(w)
		if err != nil {
			t.Fatal(err)
		}
		w2, err := ParseWrappedKey(again)
		if err != nil || w2.Parent != w.Parent || !bytes.Equal(w2.Public, w.Public) || !bytes.Equal(w2.Seed, w.Seed) {
			t.Fatalf("a wrapped key does not read back: %v", err)
		}
	})
}
