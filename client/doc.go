// Package client is the Go client of sessiond's admin API (DESIGN.md,
// "Admin HTTP contract"): one method per /v1 route, typed answers that
// mirror the contract's JSON, and Do for any other request. It is what
// sessionctl uses.
//
// Invariants:
//
//   - Every attempt, a retry included, is signed afresh with scheme v2
//     (signing.SetRequestHeaders): a timestamp from the client's clock, a new
//     nonce, and the request target exactly as the request line carries it.
//   - A request is sent again only when that cannot apply it twice: a GET or
//     HEAD, a request with an Idempotency-Key, a request refused before it
//     was sent (a dial error), or one answered 503 with Retry-After (the
//     daemon refuses those before doing anything). A POST, PATCH or DELETE
//     whose outcome is unknown (a timeout after sending, any other 5xx) is
//     never resent, and a 429 is returned, not waited out.
//   - Attempts are bounded (RetryPolicy.MaxAttempts, default 3), waits are
//     jittered, a Retry-After above RetryPolicy.MaxRetryAfter ends the
//     retries, and no wait outlives the context.
//   - A non-2xx answer is an *Error carrying the contract's status, code and
//     message; errors.As finds it through every wrapping.
//   - The client never logs, and no error it returns holds the API secret, a
//     session token, a request body or a signature.
//   - A Client is immutable after New and safe for concurrent use.
package client
