package daemon_test

import (
	"bufio"
	"strconv"
	"strings"
	"testing"

	"github.com/brokerd/brokerd/daemon"
	"github.com/brokerd/brokerd/tpm"
)

// TestTPMMetrics: /metrics times every TPM command brokerd sends, by
// command (one observation per command counted), and every operation's
// wait for the TPM, by priority class.
func TestTPMMetrics(t *testing.T) {
	t.Parallel()
	f := newFixture(t, true)
	f.cfg.Metrics.Listen = []string{freeAddr(t)}
	s := f.state()
	addKey(t, s, "ec.key", tpm.P256)
	s.Close()
	f.writePolicy(signRule("agg", "agg-1", "ec.key"))
	r := f.start(daemon.Deps{})
	agg := f.client(f.byoClient("agg-1"))
	const signs = 5
	for range signs {
		if resp := do(t, agg, "POST", r.url("/sign"), "application/json", `{"params":{"data":"x","key_id":"ec.key"}}`); resp.status != 200 {
			t.Fatalf("%d %s", resp.status, resp.body)
		}
	}
	m := scrape(t, do(t, f.client(nil), "GET", "http://"+f.cfg.Metrics.Listen[0]+"/metrics", "", "").body)
	if n := m[`brokerd_tpm_command_duration_seconds_count{command="TPM2_Sign"}`]; n < signs {
		t.Errorf("%v TPM2_Sign commands timed, want at least %d", n, signs)
	}
	for name, n := range m {
		cmd, ok := strings.CutPrefix(name, "brokerd_tpm_commands_total{")
		if !ok {
			continue
		}
		if timed := m["brokerd_tpm_command_duration_seconds_count{"+cmd]; timed != n {
			t.Errorf("%s: %v commands counted, %v timed", name, n, timed)
		}
	}
	if n := m[`brokerd_tpm_wait_seconds_count{class="api"}`]; n < signs {
		t.Errorf("%v waits of the api class, want at least %d", n, signs)
	}
	if n := m[`brokerd_tpm_wait_seconds_count{class="housekeeping"}`]; n < 1 {
		t.Errorf("no wait of the housekeeping class (the self-check pings): %v", n)
	}
}

// scrape reads the samples of a Prometheus text exposition: series → value.
func scrape(t *testing.T, text string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}
