// Package adversarial holds the adversarial suite: two certified clients
// and one uncertified host attack a brokerd running in-process on a real
// swtpm (behind a proxy that counts TPM commands), with real TLS, a real
// bbolt file and a mock bank on loopback; nothing leaves loopback (banks'
// names resolve through an injected resolver to loopback, and the dialer
// fails the test if asked for any other address). It has no code: the
// suite is its tests, run by make test.
package adversarial
