// Package lifecycle owns verification sessions: the session model, the state
// machine, the Redis store and the operations on sessions (create, progress,
// decide, cancel, expire, resume, delete, redact), and the admin HTTP API
// that drives them.
//
// Invariants:
//
//   - Redis is the only source of truth for a session; an in-process value is
//     a copy that is written back only through a compare-and-set on its version.
//   - Every change of a session is one MULTI/EXEC guarded by WATCH: the
//     session's keys, its indexes, its due times and the events it appends to
//     the outbox stream change together or not at all.
//   - A transition that the machine (machine.go) does not allow is refused
//     with ErrInvalidTransition and changes nothing.
//   - Time comes from Config.Now; no operation reads the wall clock itself.
//     Redis TTLs are sent relative to that clock's now (never as absolute
//     instants), so a skew between it and Redis's clock moves no deadline.
//   - Personal data (person, metadata) lives in its own key whose TTL ends
//     with the session's retention, so nothing personal outlives it even when
//     no daemon is running.
//   - Timed work (expiry, redaction, purge) is recorded in due indexes in the
//     same transaction; the Timer hook is only a fast path and may be lost.
package lifecycle
