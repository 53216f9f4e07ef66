package audit_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/brokerd/brokerd/audit"
	"github.com/brokerd/brokerd/store"
)

// BenchmarkVerifyAudit reports how many records per second audit verify
// checks, on a log of 1,000,000 records with a checkpoint every 1,000.
func BenchmarkVerifyAudit(b *testing.B) {
	const n, every = 1_000_000, 1000
	path := filepath.Join(b.TempDir(), store.FileName)
	s, err := openLog(path)
	if err != nil {
		b.Fatal(err)
	}
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ak := &auditKey{key: k}
	for done := 0; done < n; done += every {
		// Concurrent appenders fill each group commit.
		var wg sync.WaitGroup
		for w := 0; w < 50; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < every; i += 50 {
					rec := audit.Record{Op: "sign", Status: 200, KeyID: "qseal.key", Alg: "RS/SHA256",
						Client: "CN=agg-1", ClientSHA256: fmt.Sprintf("%064x", w), DataSHA256: fmt.Sprintf("%064x", i), DurationMS: 2.5}
					if _, err := s.Append(context.Background(), rec); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		if _, err := s.Checkpoint(context.Background(), "count", ak.sign, ak.readClock); err != nil {
			b.Fatal(err)
		}
	}
	s.Close()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		rep, err := audit.VerifyFile(path, k.Public())
		if err != nil || !rep.OK() || rep.Records != n {
			b.Fatalf("%+v, %v", rep, err)
		}
	}
	b.ReportMetric(float64(b.N*n)/time.Since(start).Seconds(), "records/s")
}
