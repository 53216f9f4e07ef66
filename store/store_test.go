package store_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/brokerd/brokerd/store"
)

// open opens a state file in a temp dir and checks its consistency when the
// test ends.
func open(t *testing.T) *store.Store {
	t.Helper()
	s, err := store.Open(filepath.Join(t.TempDir(), store.FileName), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Check(); err != nil {
			t.Errorf("consistency check: %v", err)
		}
		s.Close()
	})
	return s
}

func TestFileModeAndLock(t *testing.T) {
	t.Parallel()
	s := open(t)
	fi, err := os.Stat(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode %v, want 0600", fi.Mode().Perm())
	}
	_, err = store.Open(s.Path(), store.Options{Timeout: 50 * time.Millisecond})
	if !errors.Is(err, store.ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
}

func TestMeta(t *testing.T) {
	t.Parallel()
	s := open(t)
	if _, err := s.Meta("srk"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("missing meta: %v", err)
	}
	if err := s.SetMeta("srk", []byte{1, 2}); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Meta("srk"); err != nil || string(v) != "\x01\x02" {
		t.Fatalf("Meta = %x, %v", v, err)
	}
}

func TestKeysAndAliases(t *testing.T) {
	t.Parallel()
	s := open(t)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.PutKey(store.KeyRecord{ID: "qwac.key", Aliases: []string{"qwac.crt"}, Data: []byte("A")}, false))
	must(s.PutKey(store.KeyRecord{ID: "qseal.key", Data: []byte("B")}, false))

	cases := []struct {
		name string
		rec  store.KeyRecord
		repl bool
	}{
		{"id taken", store.KeyRecord{ID: "qwac.key"}, false},
		{"id is an alias", store.KeyRecord{ID: "qwac.crt"}, false},
		{"alias is an id", store.KeyRecord{ID: "x", Aliases: []string{"qseal.key"}}, false},
		{"alias of another key", store.KeyRecord{ID: "x", Aliases: []string{"qwac.crt"}}, false},
		{"replace takes another key's alias", store.KeyRecord{ID: "qseal.key", Aliases: []string{"qwac.crt"}}, true},
	}
	for _, c := range cases {
		if err := s.PutKey(c.rec, c.repl); !errors.Is(err, store.ErrExists) {
			t.Errorf("%s: %v, want ErrExists", c.name, err)
		}
	}

	for _, name := range []string{"qwac.key", "qwac.crt"} {
		rec, err := s.Key(name)
		if err != nil || rec.ID != "qwac.key" || string(rec.Data) != "A" || !slices.Equal(rec.Aliases, []string{"qwac.crt"}) {
			t.Fatalf("Key(%q) = %+v, %v", name, rec, err)
		}
	}
	if _, err := s.Key("nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Key(nope): %v", err)
	}

	must(s.PutKey(store.KeyRecord{ID: "qwac.key", Aliases: []string{"bank.crt", "qwac.crt"}, Data: []byte("A2")}, true))
	all, err := s.Keys()
	must(err)
	if len(all) != 2 || all[0].ID != "qseal.key" || all[1].ID != "qwac.key" || string(all[1].Data) != "A2" || len(all[1].Aliases) != 2 {
		t.Fatalf("Keys = %+v", all)
	}

	must(s.DeleteKey("qwac.key"))
	if _, err := s.Key("qwac.crt"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("alias survives its key: %v", err)
	}
	if err := s.DeleteKey("qwac.key"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	// The freed alias can be used again.
	must(s.PutKey(store.KeyRecord{ID: "y", Aliases: []string{"qwac.crt"}}, false))
}

func TestReopenKeepsData(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), store.FileName)
	s, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutKey(store.KeyRecord{ID: "k", Data: []byte("v")}, false); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = store.Open(path, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if rec, err := s.Key("k"); err != nil || string(rec.Data) != "v" {
		t.Fatalf("after reopen: %+v, %v", rec, err)
	}
}
