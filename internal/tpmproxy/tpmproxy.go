// Package tpmproxy stands between brokerd and a TPM's socket (swtpm) for
// tests: it forwards each command and its response, and can delay a
// response by command code (a slow chip's profile) or change it (a faulty
// chip), so that what real hardware does can be played on swtpm.
package tpmproxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sync"
	"time"
)

// Options say what the proxy does to the traffic.
type Options struct {
	// Delay, when set, is how long to hold the response to a command
	// with this command code.
	Delay func(cc uint32) time.Duration
	// Mutate, when set, may change the response to a command with this
	// command code (it gets a copy).
	Mutate func(cc uint32, rsp []byte) []byte
	// Command, when set, sees every command as the client wrote it (a
	// copy), before it goes to the TPM: a test records the bytes on the
	// bus with it. A non-nil result is the answer, and the TPM never
	// sees the command: a chip's limits (an algorithm it lacks, failure
	// mode) are played that way. Delay and Mutate still apply.
	Command func(cmd []byte) (rsp []byte)
}

// Proxy is a running proxy.
type Proxy struct {
	l        net.Listener
	upstream string
	opts     Options
	wg       sync.WaitGroup
	mu       sync.Mutex
	counts   map[uint32]int
}

// Start listens on a unix socket in dir and forwards to the TPM socket at
// upstream.
func Start(dir, upstream string, opts Options) (*Proxy, error) {
	l, err := net.Listen("unix", filepath.Join(dir, "proxy.sock"))
	if err != nil {
		return nil, fmt.Errorf("tpmproxy: %w", err)
	}
	p := &Proxy{l: l, upstream: upstream, opts: opts, counts: map[uint32]int{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Socket is the path brokerd connects to (address "swtpm:" + Socket()).
func (p *Proxy) Socket() string { return p.l.Addr().String() }

// Count returns how many commands with code cc went through.
func (p *Proxy) Count(cc uint32) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counts[cc]
}

// Total returns how many commands went through.
func (p *Proxy) Total() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, c := range p.counts {
		n += c
	}
	return n
}

// Close stops the proxy and waits for its connections to end.
func (p *Proxy) Close() error {
	err := p.l.Close()
	p.wg.Wait()
	return err
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer c.Close()
			p.serve(c)
		}()
	}
}

// serve forwards commands of one client connection, one at a time, over
// one upstream connection.
func (p *Proxy) serve(c net.Conn) {
	up, err := net.Dial("unix", p.upstream)
	if err != nil {
		return
	}
	defer up.Close()
	for {
		cmd, err := readMessage(c)
		if err != nil {
			return
		}
		cc := binary.BigEndian.Uint32(cmd[6:10])
		p.mu.Lock()
		p.counts[cc]++
		p.mu.Unlock()
		rsp, err := p.forward(up, cmd)
		if err != nil {
			return
		}
		if p.opts.Delay != nil {
			time.Sleep(p.opts.Delay(cc)) // the slow chip itself: holding the answer is the point
		}
		if p.opts.Mutate != nil {
			rsp = p.opts.Mutate(cc, append([]byte(nil), rsp...))
		}
		if _, err := c.Write(rsp); err != nil {
			return
		}
	}
}

// forward answers cmd: with the Command hook's answer if it gives one,
// otherwise with the TPM's.
func (p *Proxy) forward(up net.Conn, cmd []byte) ([]byte, error) {
	if p.opts.Command != nil {
		if rsp := p.opts.Command(append([]byte(nil), cmd...)); rsp != nil {
			return rsp, nil
		}
	}
	if _, err := up.Write(cmd); err != nil {
		return nil, err
	}
	return readMessage(up)
}

// readMessage reads one TPM command or response: a 10-byte header whose
// size field gives the whole length.
func readMessage(r io.Reader) ([]byte, error) {
	var hdr [10]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < 10 || size > 1<<16 {
		return nil, errors.New("tpmproxy: message size out of range")
	}
	msg := make([]byte, size)
	copy(msg, hdr[:])
	_, err := io.ReadFull(r, msg[10:])
	return msg, err
}
