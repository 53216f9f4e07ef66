package testproc_test

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/brokerd/brokerd/internal/testproc"
)

// TestChildDiesWithTheTestBinary kills a test binary (this one, run again
// as a parent) that started a long child with Start, and sees the child
// die too: the child holds the pipe's write end, so the pipe ends only
// once both are gone.
func TestChildDiesWithTheTestBinary(t *testing.T) {
	t.Parallel()
	parent := exec.Command(os.Args[0], "-test.run=^TestHelperParent$")
	parent.Env = append(os.Environ(), "TESTPROC_PARENT=1")
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	parent.Stdout = pw
	exited, err := testproc.Start(parent)
	pw.Close()
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(pr)
	if line, err := r.ReadString('\n'); err != nil || line != "child started\n" {
		t.Fatalf("parent said %q, %v", line, err)
	}
	parent.Process.Kill()
	<-exited
	eof := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, r); eof <- err }()
	select {
	case err := <-eof:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the child outlived its parent by 30s")
	}
}

// TestHelperParent is the parent of TestChildDiesWithTheTestBinary: it
// starts a child, ends a few locked OS threads (as the runtime does with a
// goroutine that returns while locked) and waits to be killed.
func TestHelperParent(t *testing.T) {
	if os.Getenv("TESTPROC_PARENT") != "1" {
		t.Skip("run by TestChildDiesWithTheTestBinary")
	}
	child := exec.Command("sleep", "600")
	child.Stdout = os.Stdout
	if _, err := testproc.Start(child); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() { defer wg.Done(); runtime.LockOSThread() }()
	}
	wg.Wait()
	os.Stdout.WriteString("child started\n")
	select {}
}
