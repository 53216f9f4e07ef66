package admin

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzRecv: whatever a peer of the admin socket sends, a message either
// decodes into one that reads back the same after sending, or is refused
// with an error; never a panic. Both ends read this way: the daemon reads
// the tool's requests and replies, the tool reads the daemon's messages.
func FuzzRecv(f *testing.F) {
	f.Add([]byte(`{"args":["key","list","--json"],"env":{"QWAC_KEY_PASSWORD":"x"}}` + "\n"))
	f.Add([]byte(`{"k":"read","path":"/etc/brokerd/qwac.key"}` + "\n"))
	f.Add([]byte(`{"k":"reply","data":"aGVsbG8=","eof":true}` + "\n"))
	f.Add([]byte(`{"k":"write","path":"a.crt","data":"","perm":420,"excl":true}` + "\n"))
	f.Add([]byte(`{"k":"exit","code":1,"err":"no"}`))
	f.Add([]byte("{\"k\":\"stdin\",\"size\":-1}\r\n{}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, v := range []func() any{func() any { return new(Request) }, func() any { return new(message) }} {
			got := v()
			if err := newConn(bytes.NewBuffer(bytes.Clone(data))).recv(got); err != nil {
				continue
			}
			var wire bytes.Buffer
			if err := newConn(&wire).send(got); err != nil {
				t.Fatalf("send %+v: %v", got, err)
			}
			if strings.Count(wire.String(), "\n") != 1 {
				t.Fatalf("a message took %q on the wire", wire.String())
			}
			first := wire.String()
			again := v()
			if err := newConn(&wire).recv(again); err != nil {
				t.Fatalf("%q does not read back: %v", first, err)
			}
			var second bytes.Buffer
			if newConn(&second).send(again); second.String() != first {
				t.Fatalf("%q reads back as %q", first, second.String())
			}
		}
	})
}
