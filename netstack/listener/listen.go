package listener

import (
	"errors"
	"fmt"
	"net"

	"github.com/coreos/go-systemd/v22/activation"
)

// Socket names that systemd socket units give with FileDescriptorName=.
const (
	SocketAPI    = "api"
	SocketHealth = "health"
)

// Listeners are the sockets brokerd serves on.
type Listeners struct {
	API    []net.Listener
	Health []net.Listener
}

// Close closes every listener.
func (l *Listeners) Close() {
	for _, x := range append(append([]net.Listener(nil), l.API...), l.Health...) {
		x.Close()
	}
}

// Listen opens the configured addresses and adds the sockets systemd passed
// (LISTEN_FDS, named "api" or "health"; unnamed sockets serve the API). It
// fails when no API socket results.
func Listen(api, health []string) (*Listeners, error) {
	var ls Listeners
	named, err := activation.ListenersWithNames()
	if err != nil {
		return nil, fmt.Errorf("listener: systemd sockets: %w", err)
	}
	for name, list := range named {
		for _, l := range list {
			if l == nil {
				continue
			}
			if name == SocketHealth {
				ls.Health = append(ls.Health, l)
			} else {
				ls.API = append(ls.API, l)
			}
		}
	}
	for _, spec := range []struct {
		addrs []string
		into  *[]net.Listener
	}{{api, &ls.API}, {health, &ls.Health}} {
		for _, a := range spec.addrs {
			l, err := net.Listen("tcp", a)
			if err != nil {
				ls.Close()
				return nil, fmt.Errorf("listener: listen on %s: %w", a, err)
			}
			*spec.into = append(*spec.into, l)
		}
	}
	if len(ls.API) == 0 {
		ls.Close()
		return nil, errors.New("listener: no API listener: set api.listen or start brokerd from its systemd socket")
	}
	return &ls, nil
}
