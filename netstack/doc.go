// Package netstack is brokerd's network edge, cut in two by
// responsibility:
//
//   - [github.com/brokerd/brokerd/netstack/listener] serves the API: the
//     mutual-TLS listener and the plain /health listener (given addresses
//     or systemd sockets), the server TLS configuration with live reload,
//     and client-certificate verification.
//   - [github.com/brokerd/brokerd/netstack/bank] calls banks for
//     makeRequest: connection pools per QWAC with session resumption, the
//     trust store for banks' certificates, the address guard and limits.
//
// Neither knows the API it carries: handlers and requests come from package
// broker, which they never import.
package netstack
