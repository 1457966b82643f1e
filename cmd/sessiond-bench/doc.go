// Command sessiond-bench measures sessiond and attacks it, against real
// processes: a private Redis deployment (internal/redistest: one
// redis-server, a Sentinel set or a Cluster) and sessiond built from
// ./cmd/sessiond, each a child process, or running ones given by address.
//
//	sessiond-bench [flags]         the load tool: idle cost, cost per
//	                               decided session, creates, webhooks,
//	                               expiry lag and Redis memory, each next
//	                               to its target, to what main measured
//	                               before the performance work (issue 12)
//	                               and to its ceiling (raw Redis, bare
//	                               Asynq) measured in the same run on the
//	                               same deployment; a missed target is
//	                               reported, not an error
//	sessiond-bench drill [flags]   the reliability drill: two replicas, a
//	                               flaky receiver, SIGKILLs and the
//	                               topology's Redis chaos under load;
//	                               exits 1 when an event or an
//	                               acknowledged change is lost, a session
//	                               ends in the wrong status or an
//	                               unauthorised request succeeds
//
// Both take --topology single|sentinel|cluster (default single) and
// --min-replicas N (SESSIOND_REDIS_MIN_REPLICAS of the daemons; default 1
// on sentinel, else 0, since only the Sentinel set has replicas):
//
//	make bench TOPOLOGY=cluster
//	make bench TOPOLOGY=sentinel MIN_REPLICAS=0
//	make drill TOPOLOGY=sentinel MIN_REPLICAS=0
//
// The drill's Redis chaos, once per run (--redis-restart-at), besides
// the replicas' SIGKILLs:
//
//   - single: redis-server SIGKILLed and restarted with its AOF
//     (appendfsync always);
//   - sentinel: the master SIGKILLed; a probe tries a create every 20 ms
//     and the report gives the time from the SIGKILL to the first one the
//     admin API accepts; after the failover the old master is started
//     again and rejoins as a replica. With --min-replicas 1 nothing
//     acknowledged may be lost; with 0 the report says what was;
//   - cluster: one master SIGKILLed and restarted on its ports with its
//     AOF and nodes.conf.
//
// The bench's idle phase samples, with the daemon up and no traffic,
// INFO total_commands_processed summed over the masters (less what the
// deployment itself sends with no daemon: replication, sentinels) and
// the daemon's CPU from /proc/<pid>/stat (Linux). Its cost phase drives
// --cost-sessions sessions to a decision and divides INFO's growth (round
// trips as total_reads_processed, commands, used_cpu_* per master) and
// the daemon's CPU by the sessions. Webhook deliveries are measured twice
// against bare Asynq draining a backlog of no-op tasks: at saturation
// (decisions as fast as the API takes them, so the API can bound the
// figure) and from a backlog (decisions made while the receiver holds
// every delivery, then let through at once).
//
// Invariants:
//
//   - sessiond is a black box: the tool uses only the admin API, the
//     webhooks, /readyz and /metrics, and the SESSIOND_* variables of
//     DESIGN.md. Of the module it imports signing (to verify webhooks),
//     internal/redistest (the deployments) and internal/redisconn (every
//     Redis client it needs, from the deployment's URL, as the daemon
//     builds its own).
//   - Every child runs in its own process group with a parent-death
//     signal (Linux), on free loopback ports, with its files in one work
//     directory that is removed unless --keep is given or the run failed.
//   - The children get exactly the SESSIOND_* settings the tool chooses:
//     the tool's own SESSIOND_* environment is not passed on.
//   - Open-loop latencies count from each request's intended start, so a
//     slow server cannot hide queueing (no coordinated omission).
//   - A ceiling is measured on the same deployment as the figure it
//     bounds, with no sessiond running.
//   - The drill's verdict rests on what sessiond itself publishes (the
//     events feed, the sessions) compared with what the receiver saw and
//     what the API acknowledged; it never reads sessiond's Redis keys. A
//     503 "made, not yet on enough replicas" is an ambiguous answer,
//     resolved by reading the session, as a lost connection is.
package main
