package daemon

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/brokerd/brokerd/keys"
	"github.com/brokerd/brokerd/netstack/listener"
	"github.com/brokerd/brokerd/tpm"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are what brokerd tells Prometheus, on the metrics listeners
// only (off unless configured, loopback in the packaged configuration).
type metrics struct {
	reg     *prometheus.Registry
	ops     *prometheus.CounterVec
	latency *prometheus.HistogramVec
	commits prometheus.Histogram
	tpmCmd  *prometheus.HistogramVec // by command
	tpmWait [tpm.NumClasses]prometheus.Observer
	signed  minuteCounter // signatures in the last minute, for STATUS=
}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.ops = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "brokerd_operations_total",
		Help: "API answers by operation, key, client (common name) and HTTP status."}, []string{"op", "key", "client", "status"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "brokerd_operation_duration_seconds",
		Help: "Time to answer, by operation.", Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}},
		[]string{"op"})
	m.commits = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "brokerd_audit_commit_duration_seconds",
		Help: "Time of one synced audit commit (it makes every record pending durable).", Buckets: prometheus.ExponentialBuckets(.0005, 2, 14)})
	m.tpmCmd = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "brokerd_tpm_command_duration_seconds",
		Help: "Time of one TPM command (one attempt), by command.", Buckets: prometheus.ExponentialBuckets(.0001, 2.5, 12)}, []string{"command"})
	wait := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "brokerd_tpm_wait_seconds",
		Help:    "Time an operation waited for the TPM (0 when it was free), by priority class.",
		Buckets: []float64{0, .001, .005, .025, .1, .25, .5, 1, 2.5, 5}}, []string{"class"})
	for c := range tpm.NumClasses {
		m.tpmWait[c] = wait.WithLabelValues(c.String())
	}
	m.reg.MustRegister(m.ops, m.latency, m.commits, m.tpmCmd, wait, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// CommandDone times one TPM command (tpm.Observer).
func (m *metrics) CommandDone(command string, took time.Duration) {
	m.tpmCmd.WithLabelValues(command).Observe(took.Seconds())
}

// Waited times one wait for the TPM (tpm.Observer).
func (m *metrics) Waited(c tpm.Class, took time.Duration) {
	if c >= 0 && c < tpm.NumClasses {
		m.tpmWait[c].Observe(took.Seconds())
	}
}

// observe counts one API answer.
func (m *metrics) observe(op, key, client string, status int, d time.Duration) {
	m.ops.WithLabelValues(op, key, client, strconv.Itoa(status)).Inc()
	m.latency.WithLabelValues(op).Observe(d.Seconds())
	if op == "sign" && status == http.StatusOK {
		m.signed.add(time.Now())
	}
}

func (m *metrics) auditCommit(_ int, d time.Duration) { m.commits.Observe(d.Seconds()) }

// registerDaemon adds the gauges read from the daemon at each scrape.
func (d *Daemon) registerMetrics() {
	gauge := func(name, help string, fn func() float64) {
		d.metrics.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, fn))
	}
	counter := func(name, help string, fn func() float64) {
		d.metrics.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, fn))
	}
	counter("brokerd_bank_handshakes_full_total", "Full TLS handshakes with banks (one QWAC signature each).",
		func() float64 { f, _ := d.bank.Handshakes(); return float64(f) })
	counter("brokerd_bank_handshakes_resumed_total", "Resumed TLS handshakes with banks (no signature).",
		func() float64 { _, r := d.bank.Handshakes(); return float64(r) })
	gauge("brokerd_audit_records_unsigned", "Audit records after the last checkpoint (durable, not yet signed).", d.unsignedRecords)
	gauge("brokerd_tpm_last_success_age_seconds", "Time since a TPM command last completed.",
		func() float64 { return time.Since(d.state.TPM.LastSuccess()).Seconds() })
	gauge("brokerd_crl_age_seconds", "Age of the CRL brokerd's CA publishes (tls/crl.pem); -1 without one.", d.crlAge)
	d.metrics.reg.MustRegister(expiryCollector{d}, admissionCollector{d})
}

// admissionCollector reports the listeners' admission control and the
// TPM's queue, read once per scrape.
type admissionCollector struct{ d *Daemon }

var (
	connsOpenDesc = prometheus.NewDesc("brokerd_connections_open", "Connections open, by listener.", []string{"listener"}, nil)
	connsRefDesc  = prometheus.NewDesc("brokerd_connections_refused_total",
		"Connections refused at accept, by listener and reason (cap in total, per source address, an address over its handshake rate: held, then reset).", []string{"listener", "reason"}, nil)
	connsHeldDesc = prometheus.NewDesc("brokerd_connections_held", "Refused connections held before their reset, by listener.", []string{"listener"}, nil)
	hsDesc        = prometheus.NewDesc("brokerd_server_handshakes_full_total", "Full TLS handshakes of the API listeners allowed to sign.", nil, nil)
	hsRefusedDesc = prometheus.NewDesc("brokerd_server_handshakes_refused_total",
		"Full TLS handshakes refused before the TPM signed, their source address over its rate.", nil, nil)
	trackedDesc = prometheus.NewDesc("brokerd_admission_tracked_addresses", "Source addresses with a handshake bucket.", nil, nil)
	waitingDesc = prometheus.NewDesc("brokerd_tpm_waiting", "Operations waiting for the TPM, by priority class.", []string{"class"}, nil)
	tpmCmdDesc  = prometheus.NewDesc("brokerd_tpm_commands_total",
		"Commands sent to the TPM, by command (TPM2_Sign...); each attempt of one the TPM asked to retry counts.", []string{"command"}, nil)
)

func (c admissionCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{connsOpenDesc, connsRefDesc, connsHeldDesc, hsDesc, hsRefusedDesc, trackedDesc, waitingDesc, tpmCmdDesc} {
		ch <- d
	}
}

func (c admissionCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.d.srv.AdmissionStats()
	for name, cs := range map[string]listener.ConnStats{"api": st.API, "health": st.Health} {
		ch <- prometheus.MustNewConstMetric(connsOpenDesc, prometheus.GaugeValue, float64(cs.Open), name)
		ch <- prometheus.MustNewConstMetric(connsHeldDesc, prometheus.GaugeValue, float64(cs.Held), name)
		ch <- prometheus.MustNewConstMetric(connsRefDesc, prometheus.CounterValue, float64(cs.RefusedCap), name, "cap")
		ch <- prometheus.MustNewConstMetric(connsRefDesc, prometheus.CounterValue, float64(cs.RefusedCapPerIP), name, "cap_per_ip")
		ch <- prometheus.MustNewConstMetric(connsRefDesc, prometheus.CounterValue, float64(cs.RefusedRate), name, "handshake_rate")
	}
	ch <- prometheus.MustNewConstMetric(hsDesc, prometheus.CounterValue, float64(st.Handshakes.Charged))
	ch <- prometheus.MustNewConstMetric(hsRefusedDesc, prometheus.CounterValue, float64(st.Handshakes.RefusedRate))
	ch <- prometheus.MustNewConstMetric(trackedDesc, prometheus.GaugeValue, float64(st.Handshakes.Tracked))
	for class, n := range c.d.state.TPM.Waiting() {
		ch <- prometheus.MustNewConstMetric(waitingDesc, prometheus.GaugeValue, float64(n), tpm.Class(class).String())
	}
	for cmd, n := range c.d.state.TPM.CommandCounts() {
		ch <- prometheus.MustNewConstMetric(tpmCmdDesc, prometheus.CounterValue, float64(n), cmd)
	}
}

func (d *Daemon) unsignedRecords() float64 {
	seq, _ := d.state.Audit.Head()
	last, err := d.state.Audit.LastCheckpoint()
	if err != nil || last == nil {
		return float64(seq)
	}
	return float64(seq - last.Seq)
}

func (d *Daemon) crlAge() float64 {
	data, err := os.ReadFile(d.state.PKI.CRLPath())
	if err != nil {
		return -1
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return -1
	}
	crl, err := x509.ParseRevocationList(block.Bytes)
	if err != nil {
		return -1
	}
	return time.Since(crl.ThisUpdate).Seconds()
}

// expiryCollector reports the days until each certificate brokerd holds
// expires: every key's and the server's.
type expiryCollector struct{ d *Daemon }

var expiryDesc = prometheus.NewDesc("brokerd_certificate_expiry_days", "Days until the certificate expires (negative: expired).",
	[]string{"key"}, nil)

var expiryWarningDesc = prometheus.NewDesc("brokerd_certificate_expiry_warning",
	"1 when the key's certificate expires within keys.expiry_warning_days (or has expired), else 0.", []string{"key"}, nil)

func (c expiryCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- expiryDesc
	ch <- expiryWarningDesc
}

func (c expiryCollector) Collect(ch chan<- prometheus.Metric) {
	infos, _ := c.d.state.Keys.List()
	warned := map[string]bool{}
	for _, k := range expiring(infos, c.d.cfg.Keys.ExpiryWarningDays, time.Now()) {
		warned[k.id] = true
	}
	for _, i := range infos {
		if i.NotAfter == nil {
			continue
		}
		ch <- prometheus.MustNewConstMetric(expiryDesc, prometheus.GaugeValue, time.Until(*i.NotAfter).Hours()/24, i.ID)
		if !keys.Reserved(i.ID) {
			ch <- prometheus.MustNewConstMetric(expiryWarningDesc, prometheus.GaugeValue, map[bool]float64{true: 1}[warned[i.ID]], i.ID)
		}
	}
}

// serveMetrics serves /metrics on the configured listeners until ctx ends.
func (d *Daemon) serveMetrics(ctx context.Context, ls []net.Listener) {
	srv := &http.Server{Handler: metricsMux(d.metrics.reg), ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 30 * time.Second}
	var wg sync.WaitGroup
	for _, l := range ls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				d.log.Error("metrics listener", "addr", l.Addr().String(), "err", err)
			}
		}()
	}
	<-ctx.Done()
	srv.Close()
	wg.Wait()
}

func metricsMux(reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return mux
}

// minuteCounter counts events of the last minute, by second.
type minuteCounter struct {
	mu    sync.Mutex
	slots [60]struct {
		sec int64
		n   int
	}
}

func (c *minuteCounter) add(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := &c.slots[now.Unix()%60]
	if s.sec != now.Unix() {
		s.sec, s.n = now.Unix(), 0
	}
	s.n++
}

// last returns the events of the minute before now.
func (c *minuteCounter) last(now time.Time) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, s := range c.slots {
		if now.Unix()-s.sec < 60 {
			n += s.n
		}
	}
	return n
}

// status is what `systemctl status` shows: where brokerd serves, its keys
// and clients, the last checkpoint and the signatures of the last minute.
func (d *Daemon) status() string {
	infos, _ := d.state.Keys.List()
	clients, _ := d.state.PKI.Registry().List()
	cp := "none yet"
	if last, err := d.state.Audit.LastCheckpoint(); err == nil && last != nil {
		cp = last.Time.Format(time.RFC3339)
	}
	return fmt.Sprintf("STATUS=serving the API on %s with %d keys and %d clients; last audit checkpoint %s; %d signatures in the last minute",
		strings.Join(d.addrs, " "), len(infos), len(clients), cp, d.metrics.signed.last(time.Now()))
}
