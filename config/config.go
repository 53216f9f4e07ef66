// Package config reads and writes brokerd's configuration file
// (/etc/brokerd/brokerd.toml): strict TOML, where an unknown key is an
// error, every option has a default, and Validate names every problem at
// once.
package config

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/template"
	"time"

	"github.com/BurntSushi/toml"

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
	StateDir string `toml:"state_dir"`
	TPM      TPM    `toml:"tpm"`

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

// Default returns the configuration of a packaged appliance.
func Default() *Config {
	return &Config{
		StateDir: "/var/lib/brokerd",
		TPM: TPM{
			Address:        tpm.DefaultAddress,
			CommandTimeout: Duration{10 * time.Second},
			KeygenTimeout:  Duration{3 * time.Minute},
			QueueDepth:     128,
			QueueWait:      Duration{5 * time.Second},
		},
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

// Load reads and validates the file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(data, path)
	if err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// Parse decodes data (read from path) over the defaults, refusing unknown
// keys. It does not validate values.
func Parse(data []byte, path string) (*Config, error) {
	c := Default()
	md, err := toml.Decode(string(data), c)
	if err != nil {
		return nil, fmt.Errorf("config: %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		var keys []string
		for _, k := range und {
			keys = append(keys, k.String())
		}
		return nil, fmt.Errorf("config: %s: unknown keys: %s", path, strings.Join(keys, ", "))
	}
	c.path = path
	if c.StateDir != "" && !filepath.IsAbs(c.StateDir) {
		c.StateDir = filepath.Join(filepath.Dir(path), c.StateDir)
	}
	return c, nil
}

// File returns the path the configuration was read from.
func (c *Config) File() string { return c.path }

// Validate reports every invalid value, one per line.
func (c *Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.StateDir == "" {
		add("state_dir: must be set")
	}
	if addr, err := tpm.ParseAddress(c.TPM.Address); err != nil {
		add("tpm.address: %v", err)
	} else if addr.Kind == tpm.KindSimulator && !tpm.SimulatorAvailable {
		add("tpm.address: the simulator is not part of this build (it exists only in test and demo builds)")
	}
	for name, d := range map[string]Duration{"tpm.command_timeout": c.TPM.CommandTimeout, "tpm.keygen_timeout": c.TPM.KeygenTimeout, "tpm.queue_wait": c.TPM.QueueWait} {
		if d.Duration <= 0 {
			add("%s: must be positive", name)
		}
	}
	if c.TPM.QueueDepth < 1 || c.TPM.QueueDepth > 100000 {
		add("tpm.queue_depth: %d out of range 1..100000", c.TPM.QueueDepth)
	}
	for _, p := range c.TPM.SealPCRs {
		if p < 0 || p > 23 {
			add("tpm.seal_pcrs: PCR %d out of range 0..23", p)
		}
	}
	if len(errs) == 0 {
		return nil
	}
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return fmt.Errorf("config: %s: %w", c.path, errors.Join(errs...))
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
