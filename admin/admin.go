// Package admin is the local administration channel of the running
// daemon: a unix socket (root and one admin group only) over which the
// command-line tool runs its state-changing commands inside the daemon,
// the one owner of the TPM and the state file.
//
// A call carries the command line; the command runs in the daemon, and
// every file it reads or writes, its standard streams and any password
// prompt are the caller's: the daemon asks the tool for them, so paths
// are the caller's paths, opened with the caller's permissions.
//
// The wire format is one JSON object per line in each direction.
package admin

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Defaults of an appliance: where the socket is, and the group that may
// use it besides root.
const (
	DefaultSocket = "/run/brokerd/admin.sock"
	DefaultGroup  = "brokerd-admin"
)

// Request is what the tool sends first: the command line, and those of
// its environment variables that commands read.
type Request struct {
	Args []string          `json:"args"`
	Env  map[string]string `json:"env,omitempty"`
}

// Kinds of messages.
const (
	kindStdout = "out"    // daemon → tool: data for standard output
	kindStderr = "err"    // daemon → tool: data for standard error
	kindRead   = "read"   // daemon → tool: send me file Path
	kindWrite  = "write"  // daemon → tool: write Data to file Path with Perm (Excl: a new file only)
	kindMkdir  = "mkdir"  // daemon → tool: create directory Path (and parents) with Perm
	kindCheck  = "check"  // daemon → tool: may file Path be written? (files.Writable)
	kindStdin  = "stdin"  // daemon → tool: send me standard input, at most Size bytes
	kindPrompt = "prompt" // daemon → tool: ask the user Data (echo off), send the answer
	kindExit   = "exit"   // daemon → tool: the command ended with Code
	kindReply  = "reply"  // tool → daemon: the answer to read/write/mkdir/stdin/prompt
)

// message is one line of the conversation.
type message struct {
	Kind string `json:"k"`
	Path string `json:"path,omitempty"`
	Data []byte `json:"data,omitempty"`
	Perm uint32 `json:"perm,omitempty"`
	Excl bool   `json:"excl,omitempty"`
	Size int    `json:"size,omitempty"`
	Code int    `json:"code,omitempty"`
	EOF  bool   `json:"eof,omitempty"`
	Err  string `json:"err,omitempty"`
}

// maxLine bounds one message: files and standard input travel in them.
const maxLine = 64 << 20

// conn reads and writes messages.
type conn struct {
	r *bufio.Reader
	w io.Writer
}

func newConn(rw io.ReadWriter) *conn {
	return &conn{r: bufio.NewReaderSize(rw, 64<<10), w: rw}
}

func (c *conn) send(v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = c.w.Write(append(data, '\n'))
	return err
}

func (c *conn) recv(v any) error {
	var line []byte
	for {
		part, isPrefix, err := c.r.ReadLine()
		if err != nil {
			if errors.Is(err, io.EOF) && len(line) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		line = append(line, part...)
		if len(line) > maxLine {
			return fmt.Errorf("admin: message longer than %d bytes", maxLine)
		}
		if !isPrefix {
			break
		}
	}
	if err := json.Unmarshal(line, v); err != nil {
		return fmt.Errorf("admin: bad message: %w", err)
	}
	return nil
}
