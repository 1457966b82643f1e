// Package clienttest is a stand-in for sessiond's admin port in tests of
// code that calls it through package client (sessionctl's, integrators').
//
// Invariants:
//
//   - Every request is checked as the contract says before the handler
//     sees it: X-AUTH-CLIENT, X-TIMESTAMP within 300 s of the server's
//     clock, the X-NONCE's shape, a nonce never seen before, and the v2
//     X-HMAC-SIGNATURE over the method, the request target as received,
//     the body's hash and the timestamp (package signing).
//   - A request that fails a check fails the test (when there is one) and
//     gets the contract's 401 answer; the handler never sees it.
//   - Every request, valid or not, is recorded in arrival order.
package clienttest
