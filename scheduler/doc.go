// Package scheduler runs the lifecycle's timed work: expiry at expires_at,
// redaction when retention ends, and purge (of a deleted session after
// PurgeAfter, of any other after RecordRetention). It keeps no work of its
// own: it claims ids from the lifecycle's due indexes, one per shard and
// kind (lifecycle.Service.DueKey), and hands each to the idempotent
// lifecycle.Service.Run.
//
// Two paths lead to Run:
//
//   - The poller claims what is due in every shard's expire index, in one
//     round trip, and runs it on a bounded pool. It sleeps until the
//     earliest next expiry, at most Config.PollInterval. The Alarm, which
//     is the lifecycle's Timer, wakes it when a change on this replica
//     sets a sooner expiry; one made on another replica is seen within
//     PollInterval.
//   - The sweep, once per Config.SweepEvery, claims what is due in every
//     shard, kind by kind (expire, purge, redact), up to Config.SweepBatch
//     ids per shard and claim, until nothing due is left, and runs it. It
//     does every redaction and purge, and repairs expiries the poller
//     missed.
//
// Invariants:
//
//   - The due indexes, written by the lifecycle in the commit of the
//     change that set the work, are the source of truth. Wake-ups, claims
//     and ticks are hints: losing one delays work by at most a sweep. No
//     work is queued in Asynq; its one task is a tick's sweep.
//   - Work never runs early: a claim decides "due" with Config.Now, which
//     must be the lifecycle's clock, and Run checks that clock again.
//   - A claim (claim.lua, one shard: one slot) moves the ids' scores
//     forward by Config.Lease, so other replicas skip them; if the claimer
//     dies they come due again when the lease ends. A Run that changed
//     nothing releases its id (release.lua), unless a lifecycle write set
//     it again meanwhile. A Run that outlives its lease is harmless: a
//     session still gets one transition and one event.
//   - Each tick's sweep runs once across all replicas: every replica's
//     cron fires at the same wall-clock multiples of SweepEvery and
//     enqueues an Asynq task (queue Config.Queue) whose TaskID is the
//     tick; the others get a TaskID conflict.
//   - Shutdown stops the producers (cron, poller) before the Asynq server
//     and returns once every goroutine the scheduler started has ended. At
//     its context's deadline the Runs in flight are cancelled; their ids
//     come due again when their lease ends.
package scheduler
