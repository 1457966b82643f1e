// Package dispatcher turns lifecycle events into signed webhook deliveries.
//
// The relay reads the shards' outbox streams through a Redis consumer
// group (all shards in one read on one Redis, one relay per shard on a
// cluster) and hands each event's delivery to every endpoint that
// wants it to an in-process worker pool, which makes the first attempt at
// once. What follows goes through Asynq, so operators see it in the queue
// UI: retries on the configured schedule, deferrals while an endpoint's
// breaker is open or it is busy, dead deliveries (archived, replayable
// through the admin API) and replays. The webhook body is put together at
// each attempt from the outbox entry and the session's event details.
//
// Endpoints come from the configuration and from the admin API, which
// keeps them in Redis (endpoints.go): every replica holds both in a
// registry it swaps whole, and reloads it within a second of a change
// made through any replica. An endpoint can be sent a test event, an
// example about a session that does not exist (testevent.go), and a
// recovery: an Asynq task that walks the outbox over a time window and
// schedules every event the endpoint did not receive with a 2xx
// (recovery.go).
//
// Invariants:
//
//   - At least once: an outbox entry is acknowledged only by the script
//     that records its last delivery, after any task that delivery needs
//     (a retry, a deferral) is in Asynq. A process killed at any point
//     leaves the entry pending in the group; another replica claims it
//     (XAUTOCLAIM) after Config.ClaimIdle and delivers what has no record
//     yet. A live process keeps its entries in flight fresh (XCLAIM
//     JUSTID), so a slow receiver does not get them claimed.
//   - A delivery's record (a field of its session's deliveries hash) is
//     written only while the session exists: a purged session's deliveries
//     are dropped, never sent. Its purge's outbox entry makes the relay
//     delete its tasks and records.
//   - Asynq's tasks hold identifiers only (delivery id, outbox entry id,
//     attempt counts), never a webhook body or personal data.
//   - webhook-id is the event id on every attempt and replay; webhook-attempt
//     counts attempts from 1 across retries and replays.
//   - Only HTTP attempts use up the retry schedule. A delivery deferred by
//     its endpoint's circuit breaker or concurrency limit, cut off by a
//     shutdown or given back after a crash keeps its attempt count.
//   - A slow or failing endpoint holds at most Config.EndpointConcurrency
//     workers; past that its first attempts wait in its line in memory
//     (bounded; no worker waits with them), and past the line they are
//     deferred, never queued behind. The relays stop reading the outbox
//     only while every enabled endpoint with a closed breaker has a long
//     line, so no endpoint waits behind another.
//   - Outgoing connections are checked at dial time, after DNS resolution:
//     every special-purpose address is refused unless Config.AllowNetworks
//     lists it (egress.go). Redirects are never followed.
//   - A recovery never sends an event whose delivery succeeded: it skips
//     those with a record that is not dead, and each delivery it schedules
//     reads its record again just before the attempt.
//   - Record times, TTLs and webhook-timestamp come from Config.Now, TTLs
//     relative to it; endpoint health (breaker, limiter, latency) and the
//     lease sweep use the wall clock, as Asynq does.
//
// Crash bound. A first attempt cut off by a SIGKILL is made again by
// another replica within ClaimIdle + 1 s (6 s). Asynq returns a SIGKILLed
// worker's task only after its 30 s lease has expired plus 30 s of slack,
// checked once a minute: 60–120 s, and none of it is configurable in
// v0.26. The dispatcher runs its own sweep (recover.go) every second on
// every replica: a task whose lease has not been extended for
// Config.OrphanAfter (15 s; Asynq extends live leases every 5 s) goes back
// to the head of the pending list without using up an attempt. So with at
// least one replica running, a crash delays a retry by at most
// OrphanAfter + 2 s (17 s by default).
package dispatcher
