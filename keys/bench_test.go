package keys_test

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/brokerd/brokerd/keys"
)

// BenchmarkSealedVsGo compares RS/SHA-256 signing with a sealed RSA-4096
// key through the registry against Go's own rsa.SignPKCS1v15 with the same
// key, both on all cores, in alternating rounds. The ratio should be ≥ 0.9:
// a sealed key signs in memory, without the TPM. Run with -benchtime=1x.
func BenchmarkSealedVsGo(b *testing.B) {
	e := setup(b)
	pemData, err := os.ReadFile(filepath.Join(referenceDir, "example.key"))
	if err != nil {
		b.Fatal(err)
	}
	priv, err := keys.ParsePrivateKeyPEM(pemData, nil)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := e.m.Import(ctx, "example.key", priv, keys.ImportOptions{}); err != nil {
		b.Fatal(err)
	}
	rsaKey := priv.(*rsa.PrivateKey)
	data := []byte("a string to sign")
	const rounds, perRound = 5, 120
	workers := runtime.GOMAXPROCS(0)
	var broker, gosign time.Duration
	for range b.N {
		for range rounds {
			broker += parallel(workers, perRound, func() error {
				_, _, err := e.m.Sign(ctx, "example.key", data, keys.RS, crypto.SHA256)
				return err
			})
			gosign += parallel(workers, perRound, func() error {
				d := sha256.Sum256(data)
				_, err := rsa.SignPKCS1v15(rand.Reader, rsaKey, crypto.SHA256, d[:])
				return err
			})
		}
	}
	n := float64(b.N * rounds * perRound)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(n/gosign.Seconds(), "go-sign/s")
	b.ReportMetric(n/broker.Seconds(), "sealed-sign/s")
	b.ReportMetric(gosign.Seconds()/broker.Seconds(), "sealed/go")
}

// parallel runs fn n times on c goroutines and returns the wall time.
func parallel(c, n int, fn func() error) time.Duration {
	start := time.Now()
	var wg sync.WaitGroup
	for i := range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := i; j < n; j += c {
				if err := fn(); err != nil {
					panic(err)
				}
			}
		}()
	}
	wg.Wait()
	return time.Since(start)
}
