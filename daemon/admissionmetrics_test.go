package daemon_test

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
	"time"

	"github.com/brokerd/brokerd/config"
	"github.com/brokerd/brokerd/daemon"
)

// TestAdmissionMetrics: /metrics counts a stranger's full handshake
// allowed and the next refused over its rate, and its connection then
// refused at accept and held.
func TestAdmissionMetrics(t *testing.T) {
	t.Parallel()
	f := newFixture(t, true)
	f.cfg.Metrics.Listen = []string{freeAddr(t)}
	f.cfg.API.HandshakesPerIP, f.cfg.API.HandshakeBurstPerIP = 0.001, 1 // no refill within the test
	f.cfg.API.MaxPause = config.Duration{Duration: 3 * time.Second}
	r := f.start(daemon.Deps{})
	pool := x509.NewCertPool()
	pool.AddCert(f.roots)
	for i, allowed := range []bool{true, false} {
		c, err := tls.Dial("tcp", r.addr, &tls.Config{RootCAs: pool, ServerName: "localhost"})
		if (err == nil) != allowed {
			t.Fatalf("full handshake %d: %v; want allowed %v", i+1, err, allowed)
		}
		if c != nil {
			c.Close()
		}
	}
	dialled := time.Now()
	held, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	reset := make(chan time.Duration, 1)
	go func() {
		held.Read(make([]byte, 1)) // ends with the reset
		reset <- time.Since(dialled)
	}()
	metrics := "http://" + f.cfg.Metrics.Listen[0] + "/metrics"
	want := map[string]float64{
		`brokerd_server_handshakes_full_total`:                                      1,
		`brokerd_server_handshakes_refused_total`:                                   1,
		`brokerd_connections_refused_total{listener="api",reason="handshake_rate"}`: 1,
		`brokerd_connections_held{listener="api"}`:                                  1,
		`brokerd_connections_held{listener="health"}`:                               0,
	}
	var m map[string]float64
	for end := time.Now().Add(waitLimit); time.Now().Before(end); time.Sleep(10 * time.Millisecond) { // polling the accept loop, not ordering
		m = scrape(t, do(t, f.client(nil), "GET", metrics, "", "").body)
		if m[`brokerd_connections_held{listener="api"}`] == 1 {
			break
		}
	}
	for name, v := range want {
		if got, ok := m[name]; !ok || got != v {
			t.Errorf("%s = %v (present %v), want %v", name, got, ok, v)
		}
	}
	// api.max_pause is how long it is held, not the default second.
	if took := <-reset; took < 3*time.Second || took > 3*time.Second+waitLimit {
		t.Errorf("the held connection was reset %v after its dial; want api.max_pause, 3s", took)
	}
}
