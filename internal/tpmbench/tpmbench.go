// Package tpmbench is the baseline of brokerd's benchmarks: signing with
// go-tpm directly, on its own connection to a swtpm, with the key kept
// loaded, and the latency statistics the benchmarks report.
package tpmbench

import (
	"slices"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport/linuxudstpm"
)

// Raw signs with a key of its own, made once under the standard ECC SRK.
type Raw struct {
	socket  string
	rsa     bool
	pub     tpm2.TPMTPublic
	private tpm2.TPM2BPrivate
}

// NewRaw creates an RSA-2048 (sign+decrypt, scheme NULL, as brokerd makes
// them) or P-256 key on the swtpm at socket.
func NewRaw(tb testing.TB, socket string, rsa bool) *Raw {
	tb.Helper()
	tr, err := linuxudstpm.Open(socket)
	if err != nil {
		tb.Fatal(err)
	}
	defer tr.Close()
	srk := primary(tb, tr)
	defer tpm2.FlushContext{FlushHandle: srk.ObjectHandle}.Execute(tr)
	tmpl := tpm2.TPMTPublic{
		Type: tpm2.TPMAlgECC, NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true, UserWithAuth: true, NoDA: true, SignEncrypt: true},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{CurveID: tpm2.TPMECCNistP256,
			Scheme: tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull}, KDF: tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull}, Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull}}),
	}
	if rsa {
		tmpl.Type = tpm2.TPMAlgRSA
		tmpl.ObjectAttributes.Decrypt = true
		tmpl.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{KeyBits: 2048,
			Scheme: tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgNull}, Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull}})
	}
	rsp, err := tpm2.Create{ParentHandle: tpm2.NamedHandle{Handle: srk.ObjectHandle, Name: srk.Name}, InPublic: tpm2.New2B(tmpl)}.Execute(tr)
	if err != nil {
		tb.Fatal(err)
	}
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		tb.Fatal(err)
	}
	return &Raw{socket: socket, rsa: rsa, pub: *pub, private: rsp.OutPrivate}
}

func primary(tb testing.TB, tr interface {
	Send([]byte) ([]byte, error)
}) *tpm2.CreatePrimaryResponse {
	tb.Helper()
	srk, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(tpm2.ECCSRKTemplate)}.Execute(tr)
	if err != nil {
		tb.Fatal(err)
	}
	return srk
}

// Run loads the key on a fresh connection and times n signatures with the
// command brokerd uses (RSA_Decrypt over a PKCS #1 block for RSA, Sign for
// ECDSA). It needs two free transient slots and frees them when done.
func (r *Raw) Run(tb testing.TB, n int) time.Duration {
	tb.Helper()
	tr, err := linuxudstpm.Open(r.socket)
	if err != nil {
		tb.Fatal(err)
	}
	defer tr.Close()
	srk := primary(tb, tr)
	defer tpm2.FlushContext{FlushHandle: srk.ObjectHandle}.Execute(tr)
	loaded, err := tpm2.Load{ParentHandle: tpm2.NamedHandle{Handle: srk.ObjectHandle, Name: srk.Name}, InPrivate: r.private, InPublic: tpm2.New2B(r.pub)}.Execute(tr)
	if err != nil {
		tb.Fatal(err)
	}
	defer tpm2.FlushContext{FlushHandle: loaded.ObjectHandle}.Execute(tr)
	key := tpm2.NamedHandle{Handle: loaded.ObjectHandle, Name: loaded.Name}
	em := make([]byte, 256)
	em[1], em[255] = 1, 1 // any value below the modulus costs the same
	digest := make([]byte, 32)
	start := time.Now()
	for range n {
		if r.rsa {
			_, err = tpm2.RSADecrypt{KeyHandle: key, CipherText: tpm2.TPM2BPublicKeyRSA{Buffer: em}, InScheme: tpm2.TPMTRSADecrypt{Scheme: tpm2.TPMAlgNull}}.Execute(tr)
		} else {
			_, err = tpm2.Sign{
				KeyHandle:  key,
				Digest:     tpm2.TPM2BDigest{Buffer: digest},
				InScheme:   tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgECDSA, Details: tpm2.NewTPMUSigScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSchemeHash{HashAlg: tpm2.TPMAlgSHA256})},
				Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck, Hierarchy: tpm2.TPMRHNull},
			}.Execute(tr)
		}
		if err != nil {
			tb.Fatal(err)
		}
	}
	return time.Since(start)
}

// Percentile returns the p-th percentile (0..100) of durations.
func Percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}
