package tpmproxy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// ProfileEnv names the environment variable that puts a slow-TPM profile
// in front of the TPM of the test harnesses that read it (FromEnv): the
// path of a profile file (testdata/tpm-profiles/slb9670.toml), absolute
// or relative to the module's root.
const ProfileEnv = "BROKERD_TPM_PROFILE"

// Profile is a slow TPM's timing: how long to hold the response to each
// command, by command code, on top of what the TPM behind the proxy
// (swtpm: well under a millisecond) takes. Options{Delay: p.Delay} plays
// it.
type Profile struct {
	// Name and About say what chip it stands for; File is where it was
	// read from.
	Name, About, File string
	// Default is the delay of a command the profile does not list.
	Default time.Duration
	// Delays are the listed commands' delays by command code.
	Delays map[uint32]time.Duration
}

// profileFile is a profile file's TOML.
type profileFile struct {
	Name     string            `toml:"name"`
	About    string            `toml:"about"`
	Default  string            `toml:"default"`
	Commands map[string]string `toml:"commands"`
}

// LoadProfile reads a profile file. Commands are named as TPM 2.0 Part 3
// names them, with or without "TPM2_" (Sign, TPM2_RSA_Decrypt), or by
// code (0x15D); delays in Go's form (200ms, 1.5s). Unknown fields and
// commands are errors.
func LoadProfile(path string) (*Profile, error) {
	var f profileFile
	md, err := toml.DecodeFile(path, &f)
	if err != nil {
		return nil, fmt.Errorf("tpmproxy: profile %s: %w", path, err)
	}
	if un := md.Undecoded(); len(un) > 0 {
		return nil, fmt.Errorf("tpmproxy: profile %s: unknown field %s", path, un[0])
	}
	p := &Profile{Name: f.Name, About: f.About, File: path, Delays: map[uint32]time.Duration{}}
	if p.Name == "" {
		return nil, fmt.Errorf("tpmproxy: profile %s: no name", path)
	}
	if p.Default, err = parseDelay(f.Default); err != nil {
		return nil, fmt.Errorf("tpmproxy: profile %s: default: %w", path, err)
	}
	for name, d := range f.Commands {
		cc, ok := CommandCode(name)
		if !ok {
			return nil, fmt.Errorf("tpmproxy: profile %s: unknown command %q", path, name)
		}
		if p.Delays[cc], err = parseDelay(d); err != nil {
			return nil, fmt.Errorf("tpmproxy: profile %s: %s: %w", path, name, err)
		}
	}
	return p, nil
}

func parseDelay(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err == nil && d < 0 {
		err = errors.New("negative delay")
	}
	return d, err
}

// FromEnv loads the profile ProfileEnv names; nil, nil when it is unset.
// A relative path is looked up from the working directory up to the
// module's root (the directory with go.mod), where tests run from.
func FromEnv() (*Profile, error) {
	path := os.Getenv(ProfileEnv)
	if path == "" {
		return nil, nil
	}
	if !filepath.IsAbs(path) {
		for dir, _ := os.Getwd(); ; dir = filepath.Dir(dir) {
			if _, err := os.Stat(filepath.Join(dir, path)); err == nil {
				path = filepath.Join(dir, path)
				break
			}
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil || dir == filepath.Dir(dir) {
				break
			}
		}
	}
	return LoadProfile(path)
}

// Delay is how long to hold the response to a command of code cc.
func (p *Profile) Delay(cc uint32) time.Duration {
	if d, ok := p.Delays[cc]; ok {
		return d
	}
	return p.Default
}

// Rate is how many commands of code cc per second the profile allows, one
// after another (the TPM does one at a time): its limit for that command.
func (p *Profile) Rate(cc uint32) float64 {
	if d := p.Delay(cc); d > 0 {
		return float64(time.Second) / float64(d)
	}
	return 0
}

// String lists the profile's delays.
func (p *Profile) String() string {
	var parts []string
	for cc, d := range p.Delays {
		parts = append(parts, fmt.Sprintf("%s %v", CommandName(cc), d))
	}
	sort.Strings(parts)
	return fmt.Sprintf("%s (%s): %s; others %v", p.Name, p.File, strings.Join(parts, ", "), p.Default)
}

// commandCodes are TPM 2.0 command codes (Part 2, TPM_CC) by their Part 3
// names: the commands brokerd sends, and a few more.
var commandCodes = map[string]uint32{
	"EvictControl": 0x120, "Clear": 0x126, "ClockSet": 0x128, "HierarchyChangeAuth": 0x129,
	"CreatePrimary": 0x131, "DictionaryAttackLockReset": 0x139, "SelfTest": 0x143, "Startup": 0x144,
	"Shutdown": 0x145, "ActivateCredential": 0x147, "Certify": 0x148, "Duplicate": 0x14B, "NV_Read": 0x14E,
	"ObjectChangeAuth": 0x150, "PolicySecret": 0x151, "Create": 0x153, "ECDH_ZGen": 0x154, "Import": 0x156,
	"Load": 0x157, "Quote": 0x158, "RSA_Decrypt": 0x159, "Sign": 0x15D, "Unseal": 0x15E,
	"ContextLoad": 0x161, "ContextSave": 0x162, "FlushContext": 0x165, "LoadExternal": 0x167,
	"NV_ReadPublic": 0x169, "ReadPublic": 0x173, "RSA_Encrypt": 0x174, "StartAuthSession": 0x176,
	"VerifySignature": 0x177, "GetCapability": 0x17A, "GetRandom": 0x17B, "Hash": 0x17D, "PCR_Read": 0x17E,
	"PolicyPCR": 0x17F, "ReadClock": 0x181, "PCR_Extend": 0x182, "PolicyGetDigest": 0x189,
	"TestParms": 0x18A, "CreateLoaded": 0x191,
}

// CommandCode returns the code of a command named as Part 3 names it
// (with or without "TPM2_"), or written as a number (0x15D).
func CommandCode(name string) (uint32, bool) {
	if cc, ok := commandCodes[strings.TrimPrefix(name, "TPM2_")]; ok {
		return cc, true
	}
	n, err := strconv.ParseUint(name, 0, 32)
	return uint32(n), err == nil && n >= 0x11F && n < 0x200
}

// CommandName returns the Part 3 name of a command code ("TPM2_Sign"), or
// the code in hex.
func CommandName(cc uint32) string {
	for name, c := range commandCodes {
		if c == cc {
			return "TPM2_" + name
		}
	}
	return fmt.Sprintf("0x%03X", cc)
}
