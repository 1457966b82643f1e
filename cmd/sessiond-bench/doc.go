// Command sessiond-bench measures sessiond and attacks it, against real
// processes: a private redis-server and sessiond built from ./cmd/sessiond,
// each a child process, or running ones given by address.
//
//	sessiond-bench [flags]         the load tool: creates, webhooks, expiry
//	                               lag and Redis memory, each next to its
//	                               ceiling (raw Redis, bare Asynq) measured
//	                               in the same run on the same Redis
//	sessiond-bench drill [flags]   the reliability drill: two replicas, a
//	                               flaky receiver, SIGKILLs and a Redis
//	                               restart under load; exits 1 when an
//	                               event is lost, a session ends in the wrong
//	                               status or an unauthorised request succeeds
//
// Invariants:
//
//   - sessiond is a black box: the tool uses only the admin API, the
//     webhooks, /readyz and /metrics, and the SESSIOND_* variables of
//     DESIGN.md. It imports signing (to verify webhooks) and no other
//     package of the module.
//   - Every child runs in its own process group with a parent-death
//     signal (Linux), on free loopback ports, with its files in one work
//     directory that is removed unless --keep is given or the run failed.
//   - The children get exactly the SESSIOND_* settings the tool chooses:
//     the tool's own SESSIOND_* environment is not passed on.
//   - Open-loop latencies count from each request's intended start, so a
//     slow server cannot hide queueing (no coordinated omission).
//   - A ceiling is measured on the same Redis as the figure it bounds,
//     with no sessiond running.
//   - The drill's verdict rests on what sessiond itself publishes (the
//     events feed, the sessions) compared with what the receiver saw and
//     what the load asked for; it never reads sessiond's Redis keys.
package main
