// Package scheduler runs the lifecycle's timed work: expiry at expires_at,
// retention redaction and purge after delete. It is the lifecycle.Timer.
//
// Three paths lead to the same idempotent lifecycle.Service.Run:
//
//   - The poller claims due ids from lifecycle.ExpireDueKey with
//     millisecond precision (it sleeps until the next due time, at most
//     Config.PollInterval, and Schedule wakes it for sooner work) and runs
//     them on a bounded pool.
//   - Asynq tasks, enqueued by Schedule on QueueExpiry and QueueMaintenance
//     with a TaskID of kind, session and version, are the durable backstop
//     for every kind of work.
//   - A robfig/cron sweep every Config.SweepEvery claims whatever is due in
//     all three due indexes, in batches of Config.SweepBatch, and runs it.
//
// Invariants:
//
//   - The due indexes, written by the lifecycle in the same transaction as
//     the change that set the work, are the source of truth. Tasks, claims
//     and ticks are hints; losing any of them delays work by at most a sweep.
//   - Work never runs early: every path decides "due" with Config.Now, and
//     Run checks the same clock again inside its transaction. An Asynq task
//     that runs before its due time is retried after the remainder, not run
//     and not counted as a failure.
//   - A claim moves an id's score forward by Config.Lease in one Lua script,
//     so other replicas skip it; if the claimer dies the id comes due again
//     when the lease ends. A Run that outlives its lease is harmless: Run is
//     atomic, so a session still gets exactly one transition and one event.
//   - Each sweep tick runs once across all replicas: every replica's cron
//     fires at the same wall-clock multiples of SweepEvery and enqueues one
//     Asynq task whose TaskID is the tick; the others get a TaskID conflict.
//   - Asynq has a connection pool of its own: Schedule runs while the
//     lifecycle holds one of its pool's connections, so an enqueue through
//     that pool could wait on itself.
//   - Shutdown stops the producers (cron, poller) before the Asynq server,
//     and returns only when every goroutine the scheduler started has ended.
package scheduler
