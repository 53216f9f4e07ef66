package tpm_test

import (
	"context"
	"strings"
	"testing"

	"github.com/brokerd/brokerd/tpm"
)

func TestClassOf(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	if c := tpm.ClassOf(ctx); c != tpm.ClassAPI {
		t.Fatalf("class of a bare context: %s, want api", c)
	}
	for c := range tpm.NumClasses {
		if got := tpm.ClassOf(tpm.WithClass(ctx, c)); got != c {
			t.Errorf("ClassOf(WithClass(%s)) = %s", c, got)
		}
	}
	if c := tpm.ClassOf(tpm.WithClass(ctx, tpm.NumClasses)); c != tpm.ClassAPI {
		t.Errorf("class of a context with an invalid class: %s, want api", c)
	}
	inner := tpm.WithClass(tpm.WithClass(ctx, tpm.ClassHousekeeping), tpm.ClassHandshake)
	if c := tpm.ClassOf(inner); c != tpm.ClassHandshake {
		t.Errorf("the innermost class does not win: %s", c)
	}
	names := map[tpm.Class]string{tpm.ClassAPI: "api", tpm.ClassHandshake: "handshake", tpm.ClassHousekeeping: "housekeeping", 7: "class(7)"}
	for c, want := range names {
		if c.String() != want {
			t.Errorf("Class(%d).String() = %q, want %q", int(c), c.String(), want)
		}
	}
}

func TestClassConfigDefaults(t *testing.T) {
	t.Parallel()
	d := tpm.DefaultConfig()
	for c, w := range [tpm.NumClasses]int{8, 2, 1} {
		if d.Classes[c].Weight != w {
			t.Errorf("default %s weight %d, want %d", tpm.Class(c), d.Classes[c].Weight, w)
		}
	}
	for _, tc := range []struct {
		queueDepth int
		want       [tpm.NumClasses]int
	}{
		{0, [tpm.NumClasses]int{128, 32, 16}}, // DefaultConfig's QueueDepth
		{128, [tpm.NumClasses]int{128, 32, 16}},
		{2, [tpm.NumClasses]int{2, 1, 1}},
		{1000, [tpm.NumClasses]int{1000, 250, 125}},
	} {
		cfg := tpm.Config{QueueDepth: tc.queueDepth}
		for c := range tpm.NumClasses {
			if got := cfg.Depth(c); got != tc.want[c] {
				t.Errorf("QueueDepth %d: %s depth %d, want %d", tc.queueDepth, c, got, tc.want[c])
			}
		}
	}
	cfg := tpm.Config{QueueDepth: 10}
	cfg.Classes[tpm.ClassHousekeeping].Depth = 7
	if got := cfg.Depth(tpm.ClassHousekeeping); got != 7 {
		t.Errorf("explicit housekeeping depth: %d, want 7", got)
	}
	if got := cfg.Depth(tpm.NumClasses); got != 0 {
		t.Errorf("depth of an invalid class: %d, want 0", got)
	}
}

func TestClassConfigValidate(t *testing.T) {
	t.Parallel()
	if err := tpm.DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		set  func(*tpm.Config)
		want string
	}{
		{"negative weight", func(c *tpm.Config) { c.Classes[tpm.ClassHandshake].Weight = -1 }, "handshake class: weight"},
		{"negative depth", func(c *tpm.Config) { c.Classes[tpm.ClassHousekeeping].Depth = -1 }, "housekeeping class: queue depth"},
	} {
		cfg := tpm.DefaultConfig()
		tc.set(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate() = %v, want an error about %q", tc.name, err, tc.want)
		}
	}
}
