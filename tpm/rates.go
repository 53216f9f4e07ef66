package tpm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
	"slices"
	"time"
)

// InfoOptions say what Info measures besides reading the TPM's
// properties.
type InfoOptions struct {
	// Rates measures each signing algorithm's rate (MeasureRates).
	Rates bool
	// RateTime and TotalTime bound the measurement (see MeasureRates).
	RateTime, TotalTime time.Duration
}

// Defaults of MeasureRates.
const (
	DefaultRateTime  = 2 * time.Second
	DefaultTotalTime = 15 * time.Second
)

// Rate is a measured signing rate: signatures of one algorithm through
// brokerd's own signing path (RSA: PKCS #1 v1.5 built in Go over
// TPM2_RSA_Decrypt; ECDSA: TPM2_Sign), one after another.
type Rate struct {
	Algorithm  Algorithm `json:"algorithm"`
	Signatures int       `json:"signatures"`
	PerSecond  float64   `json:"per_second"`
	// MedianMS is the median time of one signature, in milliseconds.
	MedianMS float64 `json:"median_ms"`
	// Skipped says why the algorithm was not measured, if it was not.
	Skipped string `json:"skipped,omitempty"`
}

// rateAlgorithms are the algorithms whose rate is measured, when the TPM
// holds them.
var rateAlgorithms = []Algorithm{P256, P384, RSA2048, RSA3072}

// MeasureRates signs with a throwaway key of each algorithm the TPM holds
// for up to perAlg (default DefaultRateTime) each, and all of it within
// total (default DefaultTotalTime): an algorithm whose turn comes after
// total is skipped. The keys are made in Go and imported, not generated
// in the TPM: an RSA key generation on a discrete chip takes from seconds
// to minutes, which would break the bound; the private-key operation
// costs the same either way. Each key is flushed when measured. The
// signatures wait for the TPM as housekeeping (ClassHousekeeping), unless
// ctx carries another class, so a running daemon's clients go first (and
// the rates then show what is left for this measurement).
func (d *Device) MeasureRates(ctx context.Context, perAlg, total time.Duration) ([]Rate, error) {
	if perAlg <= 0 {
		perAlg = DefaultRateTime
	}
	if total <= 0 {
		total = DefaultTotalTime
	}
	if _, ok := classIn(ctx); !ok {
		ctx = WithClass(ctx, ClassHousekeeping)
	}
	end := time.Now().Add(total)
	var out []Rate
	for _, alg := range rateAlgorithms {
		if !d.Supports(alg) {
			continue
		}
		if time.Until(end) <= 0 {
			out = append(out, Rate{Algorithm: alg, Skipped: fmt.Sprintf("the measurement's %v were used up", total)})
			continue
		}
		r, err := d.measure(ctx, alg, min(perAlg, time.Until(end)))
		if err != nil {
			return out, fmt.Errorf("tpm: measure %s signing rate: %w", alg, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// measure signs with a throwaway key of alg for about d.
func (d *Device) measure(ctx context.Context, alg Algorithm, span time.Duration) (Rate, error) {
	priv, err := throwawayKey(alg)
	if err != nil {
		return Rate{}, err
	}
	k, err := d.ImportKey(ctx, priv)
	if err != nil {
		return Rate{}, err
	}
	defer d.Forget(context.WithoutCancel(ctx), k)
	s, err := d.Signer(k)
	if err != nil {
		return Rate{}, err
	}
	digest := sha256.Sum256([]byte("brokerd tpm info"))
	var took []time.Duration
	start := time.Now()
	for len(took) == 0 || time.Since(start) < span {
		t := time.Now()
		if _, err := s.SignContext(ctx, digest[:], crypto.SHA256); err != nil {
			return Rate{}, err
		}
		took = append(took, time.Since(t))
	}
	elapsed := time.Since(start)
	slices.Sort(took)
	return Rate{Algorithm: alg, Signatures: len(took), PerSecond: float64(len(took)) / elapsed.Seconds(),
		MedianMS: float64(took[len(took)/2].Microseconds()) / 1000}, nil
}

// throwawayKey makes a software key of alg.
func throwawayKey(alg Algorithm) (crypto.Signer, error) {
	if alg.IsRSA() {
		return rsa.GenerateKey(rand.Reader, alg.rsaBits())
	}
	_, curve := alg.curve()
	if curve == nil {
		return nil, fmt.Errorf("unknown algorithm %q", alg)
	}
	return ecdsa.GenerateKey(curve, rand.Reader)
}
