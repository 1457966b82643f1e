// Package lifecycle owns verification sessions: the session model, the state
// machine, the Redis store and the operations on sessions (create, progress,
// decide, cancel, expire, resume, delete, redact), the events feed and the
// timed work's due indexes. It serves no HTTP: package adminapi does.
//
// Invariants:
//
//   - Redis is the only source of truth for a session; an in-process value
//     is a copy that is written back only through a compare-and-set on its
//     version.
//   - One key layout serves every topology (internal/keyspace): a session's
//     keys, its index and due entries and its outbox entries live in the
//     shard of its ref_id, one cluster slot. A session id and a token name
//     their shard.
//   - A change is one read and one commit: a Lua script (commit.lua) that
//     checks the versions the change was decided on and applies all its
//     writes (record, personal data, token, ref, indexes, due indexes,
//     outbox, event details) together, or none. A moved version means
//     read again. A change of a record this process committed in the last
//     seconds skips the read (known.go): the commit's version guard proves
//     it current. The script checks every write before it makes the first
//     (Redis does not undo a script that fails half way). Repairs of an
//     index (a stale due entry or list member) are commits too, guarded on
//     what they repair; the only writes outside the script are a Once
//     nonce spent in a read (SET NX) and the erasure of linked responses
//     in other slots (SET XX).
//   - A transition that the machine (machine.go) does not allow is refused
//     with ErrInvalidTransition and changes nothing.
//   - Time comes from Config.Now; no operation reads the wall clock itself.
//     Redis TTLs are sent relative to that clock's now (never as absolute
//     instants), so a skew between it and Redis's clock moves no deadline.
//   - Every key of a session carries a TTL that ends with its policy:
//     personal data with retention, the record with the record retention
//     (or the purge after a delete), the token with its lifetime, the event
//     details EventsRetention after the last event (or with the purge).
//     The shard's shared keys carry one too, which each write extends
//     (never shortens): an index or due index until the purge of the
//     session written, the outbox EventsRetention past its newest entry.
//     So nothing outlives its policy even if no sweep ever runs.
//   - Personal data (person, metadata, tags, the decision's reason) never
//     enters the outbox: an entry holds the event's id, type, session id,
//     status, sequence and time; the rest of its data is in the session's
//     event details, which a redaction rewrites and a purge removes.
//   - Timed work (expiry, redaction, purge) is recorded in due indexes in
//     the same commit; the Timer hook is only a fast path and may be lost.
package lifecycle
