// Package dispatcher turns lifecycle events into signed webhook deliveries.
//
// A relay reads the outbox stream (lifecycle.OutboxKey) through a Redis
// consumer group and enqueues one Asynq task per event and matching
// endpoint; Asynq workers POST the event, signed by signing.Signer, and
// retry on the configured schedule until the delivery succeeds or is dead
// (archived in Asynq, replayable through the admin API).
//
// Invariants:
//
//   - At least once: an outbox entry is acknowledged (XACK) only after every
//     delivery it fans out to has a record and an Asynq task. A relay killed
//     between any two steps leaves the entry pending in the group, and
//     another relay claims it (XAUTOCLAIM) after Config.ClaimIdle.
//   - Enqueued once: a delivery's first task has the delivery id as its
//     Asynq TaskID, and its record refuses a second enqueue once it has
//     succeeded or died. Asynq keeps a completed task's id for
//     Config.TaskRetention (24h by default), so a relay that runs twice
//     within it gets asynq.ErrTaskIDConflict, which counts as done.
//   - webhook-id is the event id on every attempt and replay; webhook-attempt
//     counts attempts from 1 across retries and replays.
//   - Only HTTP attempts use up the retry schedule. A delivery deferred by
//     its endpoint's circuit breaker or concurrency limit, cut off by a
//     shutdown or given back after a crash keeps its attempt count.
//   - A slow or failing endpoint holds at most Config.EndpointConcurrency
//     workers; past that its deliveries are deferred, never queued behind.
//   - Outgoing connections are checked at dial time, after DNS resolution:
//     loopback, private, link-local and other special-purpose addresses are
//     refused unless Config.AllowNetworks lists them. Redirects are never
//     followed.
//   - Every Redis key is built in keys.go; a delivery's keys carry the hash
//     tag {<session id>} and expire with the event's retention.
//   - Record times, TTLs and webhook-timestamp come from Config.Now, TTLs
//     relative to it; endpoint health (breaker, limiter, latency) and the
//     lease sweep use the wall clock, as Asynq does.
//   - A delivery's attempts are written before Asynq completes, retries or
//     archives its task; the record is the history, Asynq the schedule.
//
// Crash bound. Asynq returns a SIGKILLed worker's task only after its 30 s
// lease has expired plus 30 s of slack, checked once a minute: 60–120 s, and
// none of it is configurable in v0.26. The dispatcher runs its own sweep
// (recover.go) every second on every replica: a task whose lease has not
// been extended for Config.OrphanAfter (15 s; Asynq extends live leases
// every 5 s) goes back to the head of the pending list without using up an
// attempt. So with at least one replica running, a crash delays a delivery
// by at most OrphanAfter + 2 s (17 s by default), and an outbox entry the
// relay had read but not acknowledged by at most ClaimIdle + 1 s (6 s). On
// SIGTERM, in-flight deliveries may finish until the shutdown deadline;
// those cut off are put back, due at once, for the next process.
package dispatcher
