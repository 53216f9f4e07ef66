package keys_test

import (
	"strings"
	"testing"

	"github.com/brokerd/brokerd/keys"
	"github.com/brokerd/brokerd/tpm"
)

// TestSetJOSE: a key's JOSE defaults change field by field, survive a
// reopening of the registry, and bad values or an alias are refused.
func TestSetJOSE(t *testing.T) {
	t.Parallel()
	e := setup(t)
	if _, _, err := e.m.Create(ctx, "seal.key", tpm.P256, keys.CreateOptions{Aliases: []string{"seal.crt"}}); err != nil {
		t.Fatal(err)
	}
	s := func(v string) *string { return &v }
	steps := []struct {
		change keys.JOSEChange
		want   keys.JOSEDefaults
		err    string
	}{
		{keys.JOSEChange{OBISS: s("org/ssa"), OBTAN: s("openbanking.org.uk")}, keys.JOSEDefaults{OBISS: "org/ssa", OBTAN: "openbanking.org.uk"}, ""},
		{keys.JOSEChange{KID: s("kid-1")}, keys.JOSEDefaults{KID: "kid-1", OBISS: "org/ssa", OBTAN: "openbanking.org.uk"}, ""},
		{keys.JOSEChange{OBISS: s("")}, keys.JOSEDefaults{KID: "kid-1", OBTAN: "openbanking.org.uk"}, ""},
		{keys.JOSEChange{KID: s("a\nb")}, keys.JOSEDefaults{}, `keys: configure "seal.key": jws-kid must be at most 512 bytes without control characters`},
		{keys.JOSEChange{OBTAN: s(strings.Repeat("x", 513))}, keys.JOSEDefaults{}, `keys: configure "seal.key": ob-tan must be at most 512 bytes without control characters`},
	}
	for i, st := range steps {
		info, err := e.m.SetJOSE("seal.key", st.change)
		if st.err != "" {
			if err == nil || err.Error() != st.err {
				t.Errorf("step %d: %v, want %q", i, err, st.err)
			}
			continue
		}
		if err != nil || info.JOSE != st.want {
			t.Errorf("step %d: %+v, %v; want %+v", i, info.JOSE, err, st.want)
		}
	}
	if _, err := e.m.SetJOSE("seal.crt", keys.JOSEChange{KID: s("x")}); err == nil || err.Error() != `keys: configure: "seal.crt" is an alias of "seal.key"; give the key id` {
		t.Errorf("through an alias: %v", err)
	}
	again, err := keys.Open(e.dev, e.st, keys.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if info, err := again.Info("seal.key"); err != nil || info.JOSE != (keys.JOSEDefaults{KID: "kid-1", OBTAN: "openbanking.org.uk"}) {
		t.Errorf("after reopening: %+v, %v", info.JOSE, err)
	}
}
