package adversarial_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/brokerd/brokerd/config"
	"github.com/brokerd/brokerd/keys"
	"github.com/brokerd/brokerd/tpm"
)

// mr posts a makeRequest and returns the HTTP status and the body.
func (a *appliance) mr(c *http.Client, origin, path, tlsPart string) (int, string) {
	a.t.Helper()
	o, _ := json.Marshal(origin)
	p, _ := json.Marshal(path)
	return post(a.t, c, a.api+"/makeRequest", fmt.Sprintf(`{"params":{"request":{"method":"GET","origin":%s,"path":%s%s}}}`, o, p, tlsPart))
}

const withQWAC = `,"tls":{"cert_path":"qwac.crt","key_path":"qwac.key"}`

// TestNoHeadersLeakBetweenClients: a redirect's Set-Cookie and Location,
// dropped by brokerd, reach neither the answer of the client that followed
// it nor the next call of another client on the same pooled connection.
func TestNoHeadersLeakBetweenClients(t *testing.T) {
	a := start(t, options{})
	agg1, agg2 := a.client("agg-1"), a.client("agg-2")
	for _, path := range []string{"/redirect?to=/echo/after&cookie=secret-of-agg-1", "/redirect?to=https://elsewhere.test/x&cookie=secret-of-agg-1"} {
		status, body := a.mr(agg1, a.bank.URL, path, withQWAC)
		var r struct {
			Result struct {
				Headers [][]string `json:"headers"`
			} `json:"result"`
		}
		json.Unmarshal([]byte(body), &r)
		for _, h := range r.Result.Headers {
			if strings.EqualFold(h[0], "Location") || strings.EqualFold(h[0], "Set-Cookie") {
				t.Fatalf("%s: the answer carries the dropped redirect's headers: %d %s", path, status, body)
			}
		}
		status, body = a.mr(agg2, a.bank.URL, "/echo/next", withQWAC)
		if status != 200 || strings.Contains(body, "secret-of-agg-1") || strings.Contains(body, `["Location"`) {
			t.Fatalf("after %s, another client's call: %d %s", path, status, body)
		}
	}
	if full, _ := a.bank.Handshakes(); full != 1 {
		t.Fatalf("%d full handshakes with the bank: the calls did not share a pooled connection, the test covers nothing", full)
	}
}

// cvContent is what a TLS 1.3 client CertificateVerify signs (RFC 8446
// 4.4.3): 64 spaces, the context string, a zero byte and the transcript
// hash. /sign takes a JSON string, so an attacker must grind the
// handshake (its ClientHello random) until the hash is valid UTF-8, about
// 2^30 tries: here a hash of 32 ASCII bytes stands for that one.
func cvContent() string {
	hash := strings.Repeat("A", 32)
	return strings.Repeat(" ", 64) + "TLS 1.3, client CertificateVerify\x00" + hash
}

// TestNoTLSHandshakeThroughSign: /sign never signs for a TLS handshake: not
// with a QWAC, and not a CertificateVerify's content with any key.
func TestNoTLSHandshakeThroughSign(t *testing.T) {
	a := start(t, options{})
	agg1 := a.client("agg-1")
	data, _ := json.Marshal(cvContent())
	cases := []struct {
		key, data string
		status    int
		message   string
	}{
		{"qwac.key", `"any text"`, 403, `"message":"Key not for signing"`},
		{"qwac.key", string(data), 403, `"message":"Key not for signing"`},
		{"any.key", string(data), 403, `"message":"Data refused"`},
		{"qseal.key", string(data), 403, `"message":"Data refused"`},
		{"any.key", `"any text"`, 200, `"result":`},
	}
	for _, c := range cases {
		status, body := post(t, agg1, a.api+"/sign", fmt.Sprintf(`{"params":{"data":%s,"key_id":%q}}`, c.data, c.key))
		if status != c.status || !strings.Contains(body, c.message) {
			t.Errorf("%s with %.20s: %d %s, want %d %s", c.key, c.data, status, body, c.status, c.message)
		}
	}
}

// TestEveryAddressClassRefused: a makeRequest to a name whose DNS answer
// is in any special-purpose block is refused before anything is dialled
// (the injected dialer fails the test otherwise).
func TestEveryAddressClassRefused(t *testing.T) {
	a := start(t, options{})
	agg2 := a.client("agg-2")
	for name, ip := range map[string]string{
		"loopback.test": "127.0.0.1", "private.test": "10.0.0.7", "cgnat.test": "100.64.1.1", "meta.test": "169.254.169.254",
		"bench.test": "198.18.0.1", "ietf.test": "192.0.0.8", "reserved.test": "240.1.2.3", "doc.test": "203.0.113.9",
		"v6loop.test": "::1", "ula.test": "fd00::1", "sitelocal.test": "fec0::1", "linklocal6.test": "fe80::1",
		"nat64.test": "64:ff9b::a00:1", "nat64local.test": "64:ff9b:1::1", "6to4.test": "2002:a00:1::1",
		"teredo.test": "2001:0:4136:e378:8000:63bf:3fff:fdd2", "v4compat.test": "::a00:1", "mapped.test": "::ffff:10.0.0.1",
	} {
		a.names[name] = ip
		status, body := a.mr(agg2, "https://"+name, "/x", "")
		if status != 403 || !strings.Contains(body, "Destination not allowed") || strings.Contains(body, ip) {
			t.Errorf("%s (%s): %d %s", name, ip, status, body)
		}
	}
}

// TestHealthAnswersWhileTheTPMIsStopped: with the TPM stopped, /health on
// both listeners answers at once, 503 with the reason, and 200 again soon
// after the TPM is back; no answer waits on the TPM.
func TestHealthAnswersWhileTheTPMIsStopped(t *testing.T) {
	a := start(t, options{})
	agg1 := a.client("agg-1")
	check := func(want int, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			ok := true
			for _, u := range []string{a.health + "/health", a.api + "/health"} {
				start := time.Now()
				resp, err := agg1.Get(u)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if took := time.Since(start); took > time.Second {
					t.Fatalf("%s took %v", u, took)
				}
				ok = ok && resp.StatusCode == want
			}
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("/health did not answer %d within %v", want, within)
			}
			time.Sleep(20 * time.Millisecond) // polling the daemon's view of the TPM, each answer timed
		}
	}
	check(200, time.Second)
	a.sw.Pause()
	check(503, 2*time.Second)
	resumed := time.Now()
	a.sw.Resume()
	check(200, time.Second)
	t.Logf("200 again %v after the TPM's return", time.Since(resumed).Round(time.Millisecond))
}

// TestHealthCostsNothing: an uncertified host calling /health a thousand
// times makes no TPM command and no write to the state.
func TestHealthCostsNothing(t *testing.T) {
	a := start(t, options{})
	stranger := a.client("")
	// Once the start-up checkpoint is written, and with the stranger's
	// connections open (each cost a handshake signature), nothing should
	// move.
	deadline := time.Now().Add(10 * time.Second)
	for cp, _ := a.d.State().Audit.LastCheckpoint(); cp == nil; cp, _ = a.d.State().Audit.LastCheckpoint() {
		if time.Now().After(deadline) {
			t.Fatal("no start-up checkpoint")
		}
		time.Sleep(10 * time.Millisecond) // waiting for the checkpointer's first write
	}
	for _, u := range []string{a.health + "/health", a.api + "/health"} {
		resp, err := stranger.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	before, _ := os.Stat(a.cfg.StatePath())
	pings := a.proxy.Count(0x17B) // TPM2_GetRandom: the self-check's ping
	commands := a.proxy.Total()
	start := time.Now()
	for i := range 1000 {
		u := a.health + "/health"
		if i%2 == 1 {
			u = a.api + "/health"
		}
		resp, err := stranger.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	elapsed := time.Since(start)
	pings = a.proxy.Count(0x17B) - pings
	if other := a.proxy.Total() - commands - pings; other != 0 {
		t.Errorf("%d TPM commands other than the self-check's pings during 1000 /health calls", other)
	}
	if max := int(elapsed/(250*time.Millisecond)) + 2; pings > max {
		t.Errorf("%d pings in %v: more than the self-check's %d", pings, elapsed, max)
	}
	after, _ := os.Stat(a.cfg.StatePath())
	if !after.ModTime().Equal(before.ModTime()) || after.Size() != before.Size() {
		t.Errorf("the state file changed during /health calls")
	}
}

// TestDeniedRequestsCannotFillTheDisk: refusals with huge key ids write
// bounded records, and beyond a client's quota only a count; the state
// grows by kilobytes, and the appliance still signs.
func TestDeniedRequestsCannotFillTheDisk(t *testing.T) {
	a := start(t, options{config: func(c *config.Config) { c.Audit.DenialQuota = 50 }})
	agg1 := a.client("agg-1")
	before, _ := os.Stat(a.cfg.StatePath())
	huge := strings.Repeat("k", 900<<10)
	body := `{"params":{"data":"x","key_id":"` + huge + `"}}`
	for range 120 {
		if status, out := post(t, agg1, a.api+"/sign", body); status != 404 {
			t.Fatalf("%d %.200s", status, out)
		}
	}
	after, _ := os.Stat(a.cfg.StatePath())
	if grew := after.Size() - before.Size(); grew > 1<<20 {
		t.Errorf("120 refusals with 900 KiB key ids grew the state by %d bytes", grew)
	}
	if a.logs.Len() > 1<<20 {
		t.Errorf("the log holds %d bytes", a.logs.Len())
	}
	if status, out := post(t, agg1, a.api+"/sign", `{"params":{"data":"x","key_id":"any.key"}}`); status != 200 {
		t.Fatalf("the appliance no longer signs: %d %s", status, out)
	}

}

// TestHealthDuringKeyGeneration: a key generation that holds the TPM for
// seconds (as on a hardware chip) is busy, not stuck: /health stays 200,
// so systemd's watchdog does not kill the daemon mid-generation.
func TestHealthDuringKeyGeneration(t *testing.T) {
	var slow atomic.Bool
	a := start(t, options{delay: func(cc uint32) time.Duration {
		if cc == 0x153 && slow.Load() { // TPM2_Create: a key generated under the SRK
			return 2500 * time.Millisecond
		}
		return 0
	}})
	slow.Store(true)
	done := make(chan error, 1)
	go func() {
		_, _, err := a.d.State().CreateKey(context.Background(), "operator", "slow.key", tpm.P256, keys.CreateOptions{})
		done <- err
	}()
	stranger := a.client("")
	for checks := 0; ; checks++ {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			if checks < 10 {
				t.Fatalf("only %d health checks during the generation: the test covers nothing", checks)
			}
			return
		default:
		}
		resp, err := stranger.Get(a.health + "/health")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("/health %d during a key generation", resp.StatusCode)
		}
		time.Sleep(100 * time.Millisecond) // sampling /health while the generation runs
	}
}
