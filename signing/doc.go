// Package signing signs and verifies sessiond's HMAC and ed25519 signatures:
// Standard Webhooks headers (webhook-id, webhook-timestamp, webhook-signature
// with v1 and v1a entries) on outgoing webhooks; the admin API's request
// signatures (scheme v2, request.go: method, request target, body hash,
// timestamp and nonce under HMAC-SHA256); and the Veriff-style
// X-HMAC-SIGNATURE (lowercase hex HMAC-SHA256 of the body) of the legacy
// admin scheme, also echoed on webhooks.
//
// Invariants:
//   - Standard library only.
//   - Every comparison of a MAC is constant time (hmac.Equal).
//   - No error, String or fmt output ever contains secret key material;
//     a Key formats as "whsec_<redacted>" or "whsk_<redacted>".
//   - Bad input (headers, keys, signatures) yields an error or false, never a panic.
//   - A Key and a Signer are immutable and safe for concurrent use.
package signing
