// Package config reads and writes brokerd's configuration file
// (/etc/brokerd/brokerd.toml): strict TOML, where an unknown key is an
// error, every option has a default, and Validate names every problem at
// once.
package config

import (
	"bytes"
	"crypto/tls"
	_ "embed"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/template"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/brokerd/brokerd/admin"
	"github.com/brokerd/brokerd/audit"
	"github.com/brokerd/brokerd/broker"
	"github.com/brokerd/brokerd/netstack/bank"
	"github.com/brokerd/brokerd/netstack/listener"
	"github.com/brokerd/brokerd/pki"
	"github.com/brokerd/brokerd/policy"
	"github.com/brokerd/brokerd/store"
	"github.com/brokerd/brokerd/tpm"
)

// DefaultPath is where brokerd looks for its configuration unless
// --config or $BROKERD_CONFIG say otherwise.
const DefaultPath = "/etc/brokerd/brokerd.toml"

// EnvPath names the environment variable that overrides DefaultPath.
const EnvPath = "BROKERD_CONFIG"

// Config is the whole configuration file.
type Config struct {
	// StateDir holds the state file (keys, audit log). Relative paths are
	// relative to the configuration file.
	StateDir string  `toml:"state_dir"`
	TPM      TPM     `toml:"tpm"`
	API      API     `toml:"api"`
	Health   Health  `toml:"health"`
	PKI      PKI     `toml:"pki"`
	Admin    Admin   `toml:"admin"`
	Policy   Policy  `toml:"policy"`
	Bank     Bank    `toml:"bank"`
	Audit    Audit   `toml:"audit"`
	Metrics  Metrics `toml:"metrics"`
	Log      Log     `toml:"log"`
	Keys     Keys    `toml:"keys"`

	// path is the file this configuration was read from.
	path string
}

// TPM configures the TPM.
type TPM struct {
	// Address: device:/dev/tpmrm0, swtpm:SOCKET or simulator.
	Address        string   `toml:"address"`
	CommandTimeout Duration `toml:"command_timeout"`
	KeygenTimeout  Duration `toml:"keygen_timeout"`
	QueueDepth     int      `toml:"queue_depth"`
	QueueWait      Duration `toml:"queue_wait"`
	// SealPCRs binds sealed keys to these SHA-256 PCRs.
	SealPCRs []int `toml:"seal_pcrs"`
	// SimulatorSeed fixes the simulator's seeds (simulator address only).
	SimulatorSeed int64 `toml:"simulator_seed"`
}

// API configures the mutual-TLS API listener.
type API struct {
	// Listen addresses (host:port); systemd sockets named "api" add to them.
	Listen []string `toml:"listen"`
	// TLSCert is the server certificate chain file (PEM, leaf first).
	TLSCert string `toml:"tls_cert"`
	// TLSKey is the id of the server key in the key registry (in the TPM).
	TLSKey string `toml:"tls_key"`
	// ClientCA is the file of CA certificates that issue client
	// certificates (PEM; intermediates welcome).
	ClientCA string `toml:"client_ca"`
	// CRLFiles are CRLs of the client CAs (bring-your-own PKI: PEM or
	// DER), reloaded when they change.
	CRLFiles      []string `toml:"crl_files"`
	MinTLSVersion string   `toml:"min_tls_version"`
	MaxBody       int64    `toml:"max_body"`
	// MaxInFlightPerClient bounds one client certificate's requests in
	// progress; more get 429 at once.
	MaxInFlightPerClient int `toml:"max_in_flight_per_client"`
	// Admission control, per listener kind (API, health): connections in
	// total and per source address (IPv6: per IPv6PrefixLen prefix), and
	// full TLS handshakes (each one a TPM signature) per source address,
	// a token bucket of HandshakesPerIP a second and a burst.
	MaxConns            int     `toml:"max_conns"`
	MaxConnsPerIP       int     `toml:"max_conns_per_ip"`
	IPv6PrefixLen       int     `toml:"ipv6_prefix_len"`
	HandshakesPerIP     float64 `toml:"handshakes_per_ip"`
	HandshakeBurstPerIP int     `toml:"handshake_burst_per_ip"`
	MaxTrackedIPs       int     `toml:"max_tracked_ips"`
	// Pacing: requests without a client certificate, and /health, are
	// answered without a pause at RequestsPerIP a second from one source
	// address (bursts of RequestBurstPerIP); MaxPause bounds a pause, the
	// pause after a 429 or 503 with Retry-After, and how long a refused
	// connection is held.
	RequestsPerIP     float64  `toml:"requests_per_ip"`
	RequestBurstPerIP int      `toml:"request_burst_per_ip"`
	MaxPause          Duration `toml:"max_pause"`
	ReadHeaderTimeout Duration `toml:"read_header_timeout"`
	ReadTimeout       Duration `toml:"read_timeout"`
	WriteTimeout      Duration `toml:"write_timeout"`
	IdleTimeout       Duration `toml:"idle_timeout"`
	ShutdownTimeout   Duration `toml:"shutdown_timeout"`
}

// Keys configures what brokerd says of the keys it holds.
type Keys struct {
	// ExpiryWarningDays: a key whose certificate expires within this many
	// days is named in /health?details, the log and the metric
	// brokerd_certificate_expiry_warning; 0 warns of none.
	ExpiryWarningDays int `toml:"expiry_warning_days"`
}

// MaxPause is the longest api.max_pause: a refused client is held no
// longer than a minute.
const MaxPause = time.Minute

// DefaultExpiryWarningDays is keys.expiry_warning_days unless set.
const DefaultExpiryWarningDays = 30

// Health configures the plain-HTTP listener that serves only GET /health.
type Health struct {
	Listen []string `toml:"listen"`
}

// Policy configures the access policy.
type Policy struct {
	// File holds the rules (see the policy package).
	File string `toml:"file"`
	// RoleOID is the client-certificate extension whose UTF8String
	// sequence lists the client's role URLs (default: Icebreaker One's
	// ib1Roles).
	RoleOID string `toml:"role_oid"`
}

// PKI configures brokerd's own CA (when init made one).
type PKI struct {
	// ServerNames are the DNS names and IP addresses of the server
	// certificate, renewed RenewBefore its end; it is valid for
	// ServerValidity.
	ServerNames    []string `toml:"server_names"`
	ServerValidity Duration `toml:"server_validity"`
	RenewBefore    Duration `toml:"renew_before"`
	// ClientValidity is how long client certificates are valid unless
	// `client sign --days` says otherwise.
	ClientValidity Duration `toml:"client_validity"`
	// CRLValidity is the next-update distance of the CRL brokerd
	// publishes (tls/crl.pem); it is signed again halfway.
	CRLValidity Duration `toml:"crl_validity"`
}

// Admin configures the local administration socket.
type Admin struct {
	// Socket is where the running daemon takes the CLI's commands.
	Socket string `toml:"socket"`
	// Group may use the socket besides root (mode 0660).
	Group string `toml:"group"`
}

// Bank configures calls to banks (makeRequest).
type Bank struct {
	// Timeout bounds a whole call, redirects included.
	Timeout                Duration `toml:"timeout"`
	MaxResponseBody        int64    `toml:"max_response_body"`
	MaxResponseHeaderBytes int64    `toml:"max_response_header_bytes"`
	MaxRedirects           int      `toml:"max_redirects"`
	// MaxIdlePerOrigin bounds the idle connections kept per QWAC, TLS
	// version and bank origin.
	MaxIdlePerOrigin int      `toml:"max_idle_per_origin"`
	IdleTimeout      Duration `toml:"idle_timeout"`
	// MaxPools bounds the connection pools kept.
	MaxPools int `toml:"max_pools"`
	// MaxCalls bounds the makeRequest calls in progress; more get 503.
	MaxCalls int `toml:"max_calls"`
	// CredentialHeaders are dropped, with Cookie and Proxy-*, on a
	// redirect to another origin.
	CredentialHeaders []string `toml:"credential_headers"`
	// UserAgent is sent when the client sets none.
	UserAgent string `toml:"user_agent"`
	// TrustDir holds the bank CAs added with `brokerd trust add`.
	TrustDir string `toml:"trust_dir"`
}

// Audit configures the audit log.
type Audit struct {
	// A checkpoint (the chain's head signed by the TPM's audit key) is
	// made every CheckpointEvery records and every CheckpointInterval.
	CheckpointEvery    uint64   `toml:"checkpoint_every"`
	CheckpointInterval Duration `toml:"checkpoint_interval"`
	// Retention prunes records older than this (0: keep every record).
	Retention Duration `toml:"retention"`
	// MinFree is the free space (bytes) the state's file system keeps in
	// reserve: below it operations are refused with 503 until space is
	// freed.
	MinFree uint64 `toml:"min_free"`
	// DenialQuota bounds the refusals of one client a minute recorded one
	// by one; beyond it they are counted in one record a minute.
	DenialQuota int `toml:"denial_quota"`
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	// Listen addresses of plain-HTTP listeners that serve GET /metrics
	// only; none by default. Keep them on loopback or a management
	// network: metrics name keys and clients.
	Listen []string `toml:"listen"`
}

// Log configures logging (to standard error, hence the journal).
type Log struct {
	Level  string `toml:"level"`  // debug, info, warn, error
	Format string `toml:"format"` // text or json
}

// Duration is a time.Duration written as "10s" or "2m".
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("duration %q: want a number with a unit, like 10s or 2m", b)
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration as Go formats it.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Default returns the configuration of a packaged appliance, built from the
// defaults of the packages that use each value.
func Default() *Config {
	t, b, l, p := tpm.DefaultConfig(), bank.DefaultConfig(), listener.DefaultConfig(), pki.DefaultConfig()
	minTLS := "1.2"
	if l.MinVersion == tls.VersionTLS13 {
		minTLS = "1.3"
	}
	return &Config{
		StateDir: "/var/lib/brokerd",
		TPM: TPM{Address: t.Address, CommandTimeout: Duration{t.CommandTimeout}, KeygenTimeout: Duration{t.KeygenTimeout},
			QueueDepth: t.QueueDepth, QueueWait: Duration{t.QueueWait}},
		API: API{
			Listen:               []string{"0.0.0.0:8443"},
			TLSCert:              "tls/server.crt",
			TLSKey:               p.TLSKey,
			ClientCA:             "tls/client-ca.pem",
			CRLFiles:             []string{},
			MinTLSVersion:        minTLS,
			MaxBody:              broker.DefaultMaxBody,
			MaxInFlightPerClient: broker.DefaultMaxInFlightPerClient,
			MaxConns:             l.MaxConns,
			MaxConnsPerIP:        l.MaxConnsPerIP,
			IPv6PrefixLen:        l.IPv6PrefixLen,
			HandshakesPerIP:      l.HandshakesPerIP,
			HandshakeBurstPerIP:  l.HandshakeBurstPerIP,
			MaxTrackedIPs:        l.MaxTrackedIPs,
			RequestsPerIP:        l.RequestsPerIP,
			RequestBurstPerIP:    l.RequestBurstPerIP,
			MaxPause:             Duration{l.MaxPause},
			ReadHeaderTimeout:    Duration{l.ReadHeaderTimeout},
			ReadTimeout:          Duration{l.ReadTimeout},
			WriteTimeout:         Duration{l.WriteTimeout},
			IdleTimeout:          Duration{l.IdleTimeout},
			ShutdownTimeout:      Duration{listener.DefaultShutdownTimeout},
		},
		Health:  Health{Listen: []string{}},
		Metrics: Metrics{Listen: []string{}},
		Keys:    Keys{ExpiryWarningDays: DefaultExpiryWarningDays},
		Policy:  Policy{File: "policy.toml", RoleOID: policy.DefaultRoleOID},
		PKI: PKI{ServerNames: []string{}, ServerValidity: Duration{p.ServerValidity}, RenewBefore: Duration{p.RenewBefore},
			ClientValidity: Duration{p.ClientValidity}, CRLValidity: Duration{p.CRLValidity}},
		Admin: Admin{Socket: admin.DefaultSocket, Group: admin.DefaultGroup},
		Bank: Bank{Timeout: Duration{b.Timeout}, MaxResponseBody: b.MaxBody, MaxResponseHeaderBytes: b.MaxHeaderBytes,
			MaxRedirects: b.MaxRedirects, MaxIdlePerOrigin: b.MaxIdlePerPool, IdleTimeout: Duration{b.IdleTimeout},
			MaxPools: b.MaxPools, MaxCalls: broker.DefaultMaxBankCalls, CredentialHeaders: b.CredentialHeaders, UserAgent: b.UserAgent,
			TrustDir: "bank-cas"},
		Audit: Audit{CheckpointEvery: audit.DefaultCheckpointEvery, CheckpointInterval: Duration{audit.DefaultCheckpointInterval},
			MinFree: audit.DefaultMinFree, DenialQuota: broker.DefaultDenialQuota},
		Log: Log{Level: "info", Format: "text"},
	}
}

// Path resolves the configuration file's path: flag, else $BROKERD_CONFIG,
// else DefaultPath.
func Path(flag string, getenv func(string) string) string {
	if flag != "" {
		return flag
	}
	if p := getenv(EnvPath); p != "" {
		return p
	}
	return DefaultPath
}

// Error is a configuration that does not load: every problem found, at
// once (unknown keys and invalid values together).
type Error struct {
	Path     string
	Problems []string
}

func (e *Error) Error() string {
	return fmt.Sprintf("config %s: %s", e.Path, strings.Join(e.Problems, "; "))
}

// Load reads and validates the file at path; an *Error lists every
// problem.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, unknown, err := parse(data, path)
	if err != nil {
		return nil, &Error{Path: path, Problems: []string{err.Error()}}
	}
	problems := c.problems()
	for _, k := range unknown {
		problems = append(problems, fmt.Sprintf("%s: unknown key", k))
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		return nil, &Error{Path: path, Problems: problems}
	}
	return c, nil
}

// Parse decodes data (read from path) over the defaults, refusing unknown
// keys. It does not validate values.
func Parse(data []byte, path string) (*Config, error) {
	c, unknown, err := parse(data, path)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if len(unknown) > 0 {
		return nil, &Error{Path: path, Problems: []string{"unknown keys: " + strings.Join(unknown, ", ")}}
	}
	return c, nil
}

// parse decodes data over the defaults and resolves relative paths; it
// returns the keys it did not know.
func parse(data []byte, path string) (*Config, []string, error) {
	c := Default()
	md, err := toml.Decode(string(data), c)
	if err != nil {
		return nil, nil, err
	}
	var unknown []string
	for _, k := range md.Undecoded() {
		unknown = append(unknown, k.String())
	}
	c.path = path
	paths := []*string{&c.StateDir, &c.API.TLSCert, &c.API.ClientCA, &c.Policy.File, &c.Bank.TrustDir, &c.Admin.Socket}
	for i := range c.API.CRLFiles {
		paths = append(paths, &c.API.CRLFiles[i])
	}
	for _, p := range paths {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(filepath.Dir(path), *p)
		}
	}
	return c, unknown, nil
}

// File returns the path the configuration was read from.
func (c *Config) File() string { return c.path }

// Validate reports every invalid value at once, as an *Error.
func (c *Config) Validate() error {
	problems := c.problems()
	if len(problems) == 0 {
		return nil
	}
	slices.Sort(problems)
	return &Error{Path: c.path, Problems: problems}
}

// problems lists every invalid value.
func (c *Config) problems() []string {
	var p problemList
	if c.StateDir == "" {
		p.add("state_dir: must be set")
	}
	c.checkTPM(&p)
	c.checkAPI(&p)
	c.checkPKI(&p)
	c.checkBank(&p)
	if c.Policy.File == "" {
		p.add("policy.file: must be set")
	}
	if _, err := policy.ParseRoleOID(c.Policy.RoleOID); err != nil {
		p.add("policy.role_oid: %v", err)
	}
	if c.Admin.Socket == "" {
		p.add("admin.socket: must be set")
	}
	if d := c.Keys.ExpiryWarningDays; d < 0 || d > 3650 {
		p.add("keys.expiry_warning_days: %d is not 0 to 3650", d)
	}
	if c.Audit.DenialQuota < 1 {
		p.add("audit.denial_quota: must be positive")
	}
	if c.Audit.MinFree < 1<<20 {
		p.add("audit.min_free: %d bytes is less than 1 MiB", c.Audit.MinFree)
	}
	if c.Audit.CheckpointEvery < 1 {
		p.add("audit.checkpoint_every: must be positive")
	}
	if c.Audit.CheckpointInterval.Duration < time.Second {
		p.add("audit.checkpoint_interval: %v is shorter than a second", c.Audit.CheckpointInterval)
	}
	if r := c.Audit.Retention.Duration; r < 0 || (r > 0 && r < time.Hour) {
		p.add("audit.retention: %v (want 0 to keep every record, or an hour or more)", c.Audit.Retention)
	}
	if _, ok := logLevels[c.Log.Level]; !ok {
		p.add("log.level: %q (want debug, info, warn or error)", c.Log.Level)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		p.add("log.format: %q (want text or json)", c.Log.Format)
	}
	return p
}

// problemList collects problems.
type problemList []string

func (p *problemList) add(format string, args ...any) { *p = append(*p, fmt.Sprintf(format, args...)) }

// positive adds a problem for each duration that is not positive.
func (p *problemList) positive(durations map[string]Duration) {
	for name, d := range durations {
		if d.Duration <= 0 {
			p.add("%s: must be positive", name)
		}
	}
}

func (c *Config) checkTPM(p *problemList) {
	if addr, err := tpm.ParseAddress(c.TPM.Address); err != nil {
		p.add("tpm.address: %v", err)
	} else if addr.Kind == tpm.KindSimulator && !tpm.SimulatorAvailable {
		p.add("tpm.address: the simulator is not part of this build (it exists only in test and demo builds)")
	}
	p.positive(map[string]Duration{"tpm.command_timeout": c.TPM.CommandTimeout, "tpm.keygen_timeout": c.TPM.KeygenTimeout,
		"tpm.queue_wait": c.TPM.QueueWait})
	if c.TPM.QueueDepth < 1 || c.TPM.QueueDepth > 100000 {
		p.add("tpm.queue_depth: %d out of range 1..100000", c.TPM.QueueDepth)
	}
	for _, pcr := range c.TPM.SealPCRs {
		if pcr < 0 || pcr > 23 {
			p.add("tpm.seal_pcrs: PCR %d out of range 0..23", pcr)
		}
	}
}

func (c *Config) checkAPI(p *problemList) {
	p.positive(map[string]Duration{"api.read_header_timeout": c.API.ReadHeaderTimeout, "api.read_timeout": c.API.ReadTimeout,
		"api.write_timeout": c.API.WriteTimeout, "api.idle_timeout": c.API.IdleTimeout, "api.shutdown_timeout": c.API.ShutdownTimeout,
		"api.max_pause": c.API.MaxPause})
	for _, spec := range []struct {
		name  string
		addrs []string
	}{{"api.listen", c.API.Listen}, {"health.listen", c.Health.Listen}, {"metrics.listen", c.Metrics.Listen}} {
		for _, a := range spec.addrs {
			if _, port, err := net.SplitHostPort(a); err != nil || port == "" {
				p.add("%s: %q is not host:port", spec.name, a)
			}
		}
	}
	if c.API.TLSCert == "" || c.API.ClientCA == "" || c.API.TLSKey == "" {
		p.add("api: tls_cert, tls_key and client_ca must be set")
	}
	if c.API.MinTLSVersion != "1.2" && c.API.MinTLSVersion != "1.3" {
		p.add("api.min_tls_version: %q (want \"1.2\" or \"1.3\")", c.API.MinTLSVersion)
	}
	if c.API.MaxBody < 1024 || c.API.MaxBody > 1<<30 {
		p.add("api.max_body: %d out of range 1024..1073741824", c.API.MaxBody)
	}
	if c.API.WriteTimeout.Duration <= c.Bank.Timeout.Duration {
		p.add("api.write_timeout (%v) must exceed bank.timeout (%v), or bank answers cannot reach the client", c.API.WriteTimeout, c.Bank.Timeout)
	}
}

func (c *Config) checkPKI(p *problemList) {
	for name, d := range map[string]Duration{"pki.server_validity": c.PKI.ServerValidity, "pki.renew_before": c.PKI.RenewBefore,
		"pki.client_validity": c.PKI.ClientValidity, "pki.crl_validity": c.PKI.CRLValidity} {
		if d.Duration < time.Minute {
			p.add("%s: %v is shorter than a minute", name, d)
		}
	}
	if c.PKI.RenewBefore.Duration >= c.PKI.ServerValidity.Duration {
		p.add("pki.renew_before (%v) must be shorter than pki.server_validity (%v)", c.PKI.RenewBefore, c.PKI.ServerValidity)
	}
}

func (c *Config) checkBank(p *problemList) {
	p.positive(map[string]Duration{"bank.timeout": c.Bank.Timeout, "bank.idle_timeout": c.Bank.IdleTimeout})
	for name, v := range map[string]int64{"bank.max_response_body": c.Bank.MaxResponseBody, "bank.max_response_header_bytes": c.Bank.MaxResponseHeaderBytes,
		"bank.max_redirects": int64(c.Bank.MaxRedirects), "bank.max_idle_per_origin": int64(c.Bank.MaxIdlePerOrigin),
		"bank.max_pools": int64(c.Bank.MaxPools), "bank.max_calls": int64(c.Bank.MaxCalls),
		"api.max_in_flight_per_client": int64(c.API.MaxInFlightPerClient), "api.max_conns": int64(c.API.MaxConns),
		"api.max_conns_per_ip": int64(c.API.MaxConnsPerIP), "api.handshake_burst_per_ip": int64(c.API.HandshakeBurstPerIP),
		"api.max_tracked_ips": int64(c.API.MaxTrackedIPs), "api.request_burst_per_ip": int64(c.API.RequestBurstPerIP)} {
		if v < 1 {
			p.add("%s: must be positive", name)
		}
	}
	for name, v := range map[string]float64{"api.handshakes_per_ip": c.API.HandshakesPerIP, "api.requests_per_ip": c.API.RequestsPerIP} {
		if !(v > 0) || math.IsInf(v, 1) { // NaN too
			p.add("%s: must be a positive number", name)
		}
	}
	if c.API.MaxPause.Duration > MaxPause {
		p.add("api.max_pause: %v is longer than %v", c.API.MaxPause.Duration, MaxPause)
	}
	if c.API.IPv6PrefixLen < 1 || c.API.IPv6PrefixLen > 128 {
		p.add("api.ipv6_prefix_len: %d out of range 1..128", c.API.IPv6PrefixLen)
	}
	if c.Bank.TrustDir == "" {
		p.add("bank.trust_dir: must be set")
	}
}

var logLevels = map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError}

// Logger returns the logger the configuration asks for, writing to w.
func (c *Config) Logger(w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: logLevels[c.Log.Level]}
	if c.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// TLSMinVersion returns api.min_tls_version as a crypto/tls constant.
func (c *Config) TLSMinVersion() uint16 {
	if c.API.MinTLSVersion == "1.3" {
		return tls.VersionTLS13
	}
	return tls.VersionTLS12
}

// BankConfig returns the bank client's configuration.
func (c *Config) BankConfig(log *slog.Logger) bank.Config {
	return bank.Config{
		Timeout:        c.Bank.Timeout.Duration,
		MaxBody:        c.Bank.MaxResponseBody,
		MaxHeaderBytes: c.Bank.MaxResponseHeaderBytes,
		MaxRedirects:   c.Bank.MaxRedirects,
		MaxIdlePerPool: c.Bank.MaxIdlePerOrigin,
		IdleTimeout:    c.Bank.IdleTimeout.Duration,
		MaxPools:       c.Bank.MaxPools,
		UserAgent:      c.Bank.UserAgent,
		Log:            log,
		// A copy: the configuration's slice is not the client's to keep.
		CredentialHeaders: append([]string{}, c.Bank.CredentialHeaders...),
	}
}

// TPMConfig returns the tpm package's configuration.
func (c *Config) TPMConfig() tpm.Config {
	return tpm.Config{
		Address:        c.TPM.Address,
		CommandTimeout: c.TPM.CommandTimeout.Duration,
		KeygenTimeout:  c.TPM.KeygenTimeout.Duration,
		QueueDepth:     c.TPM.QueueDepth,
		QueueWait:      c.TPM.QueueWait.Duration,
		SimulatorSeed:  c.TPM.SimulatorSeed,
	}
}

//go:embed brokerd.toml.tmpl
var fileTemplate string

var tmpl = template.Must(template.New("brokerd.toml").Parse(fileTemplate))

// Render writes c as a commented configuration file.
func (c *Config) Render() ([]byte, error) {
	var b bytes.Buffer
	if err := tmpl.Execute(&b, c); err != nil {
		return nil, fmt.Errorf("config: render: %w", err)
	}
	// What we write must read back the same.
	back, err := Parse(b.Bytes(), "rendered")
	if err != nil {
		return nil, fmt.Errorf("config: render: %w", err)
	}
	back.path = c.path
	if fmt.Sprint(*back) != fmt.Sprint(*c) {
		return nil, errors.New("config: render: the written file does not read back the same")
	}
	return b.Bytes(), nil
}

// WriteNew writes c to path (mode 0640), refusing to overwrite a file.
func (c *Config) WriteNew(path string) error {
	data, err := c.Render()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("config: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("config: write %s: %w", path, err)
	}
	c.path = path
	return nil
}

// RoleOID returns policy.role_oid (valid once the configuration is).
func (c *Config) RoleOID() asn1.ObjectIdentifier {
	o, _ := policy.ParseRoleOID(c.Policy.RoleOID)
	return o
}

// PKIConfig returns the configuration of brokerd's CA.
func (c *Config) PKIConfig() pki.Config {
	return pki.Config{
		ServerNames:    c.PKI.ServerNames,
		ServerValidity: c.PKI.ServerValidity.Duration,
		RenewBefore:    c.PKI.RenewBefore.Duration,
		ClientValidity: c.PKI.ClientValidity.Duration,
		CRLValidity:    c.PKI.CRLValidity.Duration,
		TLSCert:        c.API.TLSCert,
		TLSKey:         c.API.TLSKey,
		RoleOID:        c.RoleOID(),
	}
}

// StatePath is the state file's path.
func (c *Config) StatePath() string { return filepath.Join(c.StateDir, store.FileName) }
