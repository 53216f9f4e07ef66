package tpm_test

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport/linuxudstpm"

	"github.com/brokerd/brokerd/internal/swtpmtest"
	"github.com/brokerd/brokerd/internal/tpmproxy"
	"github.com/brokerd/brokerd/tpm"
)

// TestGuardLockout: the lockout hierarchy gets a random auth value, only
// once it is kept (a value that cannot be kept is never set), sent
// encrypted, and left alone once set.
func TestGuardLockout(t *testing.T) {
	ctx := context.Background()
	sw := swtpmtest.Start(t)
	var (
		mu   sync.Mutex
		sent [][]byte
	)
	p, err := tpmproxy.Start(t.TempDir(), sw.Socket(), tpmproxy.Options{Command: func(cmd []byte) []byte {
		mu.Lock()
		sent = append(sent, cmd)
		mu.Unlock()
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	d, err := tpm.Open(tpm.Config{Address: "swtpm:" + p.Socket()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	refused := errors.New("the state is read-only")
	if set, err := d.GuardLockout(ctx, func([]byte) error { return refused }); !errors.Is(err, refused) || set {
		t.Fatalf("keep failed: set %v, %v", set, err)
	}
	if lockoutAuthSet(t, d) {
		t.Fatal("the lockout auth was set although it could not be kept")
	}
	var kept []byte
	set, err := d.GuardLockout(ctx, func(auth []byte) error {
		kept = append([]byte(nil), auth...)
		return nil
	})
	if err != nil || !set || len(kept) != 32 {
		t.Fatalf("GuardLockout: set %v, kept %d bytes, %v", set, len(kept), err)
	}
	if !lockoutAuthSet(t, d) {
		t.Fatal("the TPM says its lockout auth is not set")
	}
	if set, err := d.GuardLockout(ctx, func([]byte) error { t.Error("asked to keep a second value"); return nil }); err != nil || set {
		t.Fatalf("second GuardLockout: set %v, %v: want false, nil", set, err)
	}
	mu.Lock()
	for _, cmd := range sent {
		if bytes.Contains(cmd, kept) {
			t.Errorf("the lockout auth crossed the bus in clear in %x", cmd)
		}
	}
	mu.Unlock()
	d.Close()

	// The kept value is the lockout hierarchy's auth: with it, the auth
	// can be changed back.
	tr, err := linuxudstpm.Open(p.Socket())
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if _, err := (tpm2.HierarchyChangeAuth{AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHLockout,
		Auth: tpm2.PasswordAuth(kept)}}).Execute(tr); err != nil {
		t.Fatalf("the kept value does not authorize the lockout hierarchy: %v", err)
	}
}

func lockoutAuthSet(t *testing.T, d *tpm.Device) bool {
	t.Helper()
	info, err := d.Info(context.Background(), tpm.InfoOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return info.Lockout.AuthSet
}
