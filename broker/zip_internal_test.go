package broker

import (
	"archive/zip"
	"bytes"
	"strings"
	"testing"

	"github.com/brokerd/brokerd/netstack/bank"
)

// TestZipEntriesAreCapped: a bank's ZIP with more entries than brokerd
// reads is refused from its end record, before its directory is parsed;
// one within the cap gives its first file.
func TestZipEntriesAreCapped(t *testing.T) {
	t.Parallel()
	archive := func(n int) []byte {
		var buf bytes.Buffer
		zw := zip.NewWriter(&buf)
		for i := range n {
			f, _ := zw.CreateHeader(&zip.FileHeader{Name: strings.Repeat("x", i%7+1), Method: zip.Store})
			if i == 0 {
				f.Write([]byte("first"))
			}
		}
		zw.Close()
		return buf.Bytes()
	}
	text, err := responseText(&bank.Response{ContentType: "application/octet-stream", Body: archive(maxZipEntries)})
	if err != nil || text != "first" {
		t.Fatalf("%d entries: %q, %v", maxZipEntries, text, err)
	}
	_, err = responseText(&bank.Response{ContentType: "application/octet-stream", Body: archive(maxZipEntries + 1)})
	if err == nil || !strings.Contains(err.Error(), "1025 entries or more") {
		t.Fatalf("%d entries: %v", maxZipEntries+1, err)
	}
	if n, err := zipEntries([]byte("PK not a zip")); err == nil {
		t.Fatalf("a broken archive: %d entries", n)
	}
}
