package listener

import "net/netip"

// SetAdmissionHook has f hear of every admission decision of s once it
// took effect, with the listener kind ("api" or "health") and the event.
// Set it before serving.
func SetAdmissionHook(s *Server, f func(kind, event string)) {
	h := func(kind string, ev admissionEvent, _ netip.Prefix) { f(kind, string(ev)) }
	s.apiConns.hook, s.healthConns.hook, s.handshakes.hook = h, h, h
}
