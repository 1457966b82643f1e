package dispatcher

import (
	"context"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/internal/redistest"
	"github.com/sessiond/sessiond/lifecycle"
)

// bareEnv is an env whose Dispatcher is made but not started, for tests
// that set up a crash's leftovers first.
func bareEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	srv := redistest.Start(t)
	e := &env{t: t, ctx: t.Context(), srv: srv, rdb: srv.Client()}
	e.svc = lifecycle.New(e.rdb, lifecycle.Config{})
	d, err := New(e.rdb, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Shutdown(context.Background()) })
	e.d = d
	return e
}

// outbox reads every outbox entry.
func (e *env) outbox() []redis.XMessage {
	e.t.Helper()
	msgs, err := e.rdb.XRange(e.ctx, lifecycle.OutboxKey, "-", "+").Result()
	if err != nil {
		e.t.Fatal(err)
	}
	return msgs
}

// A worker SIGKILLed mid-delivery leaves its task active with a lease
// nobody extends. The next process gives it back within OrphanAfter, not
// Asynq's 60–120 s, and without using up an attempt.
func TestOrphanedTaskIsGivenBack(t *testing.T) {
	t.Parallel()
	rv := newReceiver(t, testSecret)
	cfg := testConfig(rv.endpoint("default"))
	cfg.OrphanAfter = 10 * time.Second
	e := bareEnv(t, cfg)
	sid := e.create("user-1")
	if err := e.d.ensureGroup(e.ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.d.relayBatch(e.ctx, e.outbox()); err != nil {
		t.Fatal(err)
	}
	ev := e.events(sid)[0]
	did := deliveryID(sid, ev.ID, "default")

	// What Asynq's dequeue does, for a worker that then died 12 s ago
	// (its lease, 30 s from its last extension, has 18 s left).
	q := e.d.cfg.Queue
	if err := e.rdb.LMove(e.ctx, asynqPendingKey(q), asynqActiveKey(q), "RIGHT", "LEFT").Err(); err != nil {
		t.Fatal(err)
	}
	e.rdb.ZAdd(e.ctx, asynqLeaseKey(q), redis.Z{Score: float64(time.Now().Add(18 * time.Second).Unix()), Member: did})
	e.rdb.HSet(e.ctx, asynqTaskPrefix(q)+did, "state", "active")

	started := time.Now()
	d := e.start(cfg)
	got := rv.waitN(ev.ID, 1, 10*time.Second)
	if got[0].attempt != 1 {
		t.Errorf("webhook-attempt = %d, want 1: a crash does not use up an attempt", got[0].attempt)
	}
	if took := time.Since(started); took > 3*time.Second {
		t.Errorf("given back after %v", took)
	}
	if n := d.Stats().Requeued; n != 1 {
		t.Errorf("Requeued = %d, want 1", n)
	}
}

// The sweep leaves live leases alone and gives back only stale ones.
func TestRequeueOrphansLeavesLiveLeases(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client()
	ctx := t.Context()
	const q = "test"
	now := time.Now()
	leases := map[string]time.Duration{
		"live":     30 * time.Second, // just extended
		"beat-ago": 25 * time.Second, // extended 5 s ago: one heartbeat
		"stale":    10 * time.Second, // not extended for 20 s
		"expired":  -5 * time.Second,
	}
	for id, left := range leases {
		rdb.LPush(ctx, asynqActiveKey(q), id)
		rdb.ZAdd(ctx, asynqLeaseKey(q), redis.Z{Score: float64(now.Add(left).Unix()), Member: id})
		rdb.HSet(ctx, asynqTaskPrefix(q)+id, "msg", "x", "state", "active")
	}
	rdb.ZAdd(ctx, asynqLeaseKey(q), redis.Z{Score: 1, Member: "no-task"}) // lease without a task
	n, err := requeueOrphans(ctx, rdb, q, 15*time.Second, now)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("requeued %d, want 2", n)
	}
	pending := rdb.LRange(ctx, asynqPendingKey(q), 0, -1).Val()
	active := rdb.LRange(ctx, asynqActiveKey(q), 0, -1).Val()
	if len(pending) != 2 || len(active) != 2 {
		t.Errorf("pending %v, active %v", pending, active)
	}
	for _, id := range active {
		if id != "live" && id != "beat-ago" {
			t.Errorf("%s still active", id)
		}
	}
	if s := rdb.HGet(ctx, asynqTaskPrefix(q)+"stale", "state").Val(); s != "pending" {
		t.Errorf("stale task state = %q, want pending", s)
	}
	if rdb.Exists(ctx, asynqTaskPrefix(q)+"no-task").Val() != 0 || rdb.ZScore(ctx, asynqLeaseKey(q), "no-task").Err() == nil {
		t.Error("a lease without a task was not just dropped")
	}
}

// Running the relay twice over the same entries enqueues once: the second
// enqueue conflicts on the TaskID, and a finished delivery is not enqueued
// again at all.
func TestRelayTwiceEnqueuesOnce(t *testing.T) {
	t.Parallel()
	rv := newReceiver(t, testSecret)
	cfg := testConfig(rv.endpoint("default"))
	e := bareEnv(t, cfg)
	sid := e.create("user-1")
	if err := e.d.ensureGroup(e.ctx); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := e.d.relayBatch(e.ctx, e.outbox()); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.d.Stats().Enqueued; n != 1 {
		t.Fatalf("Enqueued = %d, want 1", n)
	}
	d := e.start(cfg)
	ev := e.events(sid)[0]
	rv.waitN(ev.ID, 1, 5*time.Second)
	waitFor(t, 5*time.Second, "delivery succeeded", func() bool {
		ds := e.deliveries(sid)
		return len(ds) == 1 && ds[0].Status == StatusSucceeded
	})
	// Even with the task's id gone (retention over), no second delivery.
	insp := asynq.NewInspectorFromRedisClient(e.rdb)
	taskID := deliveryID(sid, ev.ID, "default")
	waitFor(t, 5*time.Second, "the task completed", func() bool {
		info, err := insp.GetTaskInfo(e.d.cfg.Queue, taskID)
		return err == nil && info.State == asynq.TaskStateCompleted
	})
	if err := insp.DeleteTask(e.d.cfg.Queue, taskID); err != nil {
		t.Fatal(err)
	}
	if err := d.relayBatch(e.ctx, e.outbox()); err != nil {
		t.Fatal(err)
	}
	if n := d.Stats().Enqueued; n != 0 {
		t.Errorf("a finished delivery was enqueued again")
	}
}

// Entries a dead relay read but never acknowledged are claimed and relayed.
func TestUnacknowledgedEntriesAreClaimed(t *testing.T) {
	t.Parallel()
	rv := newReceiver(t, testSecret)
	cfg := testConfig(rv.endpoint("default"))
	e := bareEnv(t, cfg)
	if err := e.d.ensureGroup(e.ctx); err != nil {
		t.Fatal(err)
	}
	sid := e.create("user-1")
	// A relay that read the entry and died.
	err := e.rdb.XReadGroup(e.ctx, &redis.XReadGroupArgs{
		Group: relayGroup, Consumer: "dead", Streams: []string{lifecycle.OutboxKey, ">"}, Block: -1,
	}).Err()
	if err != nil {
		t.Fatal(err)
	}
	e.start(cfg)
	ev := e.events(sid)[0]
	rv.waitN(ev.ID, 1, 5*time.Second)
	waitFor(t, 5*time.Second, "the entry to be acknowledged", func() bool {
		p, err := e.rdb.XPending(e.ctx, lifecycle.OutboxKey, relayGroup).Result()
		return err == nil && p.Count == 0
	})
}

// At the shutdown deadline a delivery still in flight is cut off and put
// back, due at once and with its retry count unchanged; the next process
// sends it with the same webhook-id and attempt number.
func TestShutdownCutsOffAndGivesBack(t *testing.T) {
	t.Parallel()
	rv := newReceiver(t, testSecret)
	var hang atomic.Bool
	hang.Store(true)
	rv.setAnswer(func(w http.ResponseWriter, r *http.Request, _ *receipt, _ int) int {
		if hang.Load() {
			<-r.Context().Done()
			return 0
		}
		w.WriteHeader(http.StatusOK)
		return http.StatusOK
	})
	cfg := testConfig(rv.endpoint("default"))
	cfg.Timeout = 30 * time.Second
	e := newEnv(t, cfg)
	sid := e.create("user-1")
	ev := e.events(sid)[0]
	rv.waitN(ev.ID, 1, 5*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	began := time.Now()
	if err := e.d.Shutdown(ctx); err == nil {
		t.Error("Shutdown = nil, want the cut-off reported")
	}
	if took := time.Since(began); took > time.Second {
		t.Errorf("Shutdown took %v with a 500ms deadline", took)
	}
	info, err := asynq.NewInspectorFromRedisClient(e.rdb).GetTaskInfo(e.d.cfg.Queue, deliveryID(sid, ev.ID, "default"))
	if err != nil {
		t.Fatal(err)
	}
	// Due at once: in the retry set, or already moved back to pending by
	// a server that was still stopping.
	due := info.State == asynq.TaskStatePending || (info.State == asynq.TaskStateRetry && time.Until(info.NextProcessAt) <= time.Second)
	if !due || info.Retried != 0 {
		t.Errorf("cut-off task: state %v, retried %d, next at %v; want due now, retried 0", info.State, info.Retried, info.NextProcessAt)
	}

	hang.Store(false)
	e.start(cfg)
	got := rv.waitN(ev.ID, 2, 5*time.Second)
	if got[1].attempt != 1 {
		t.Errorf("after the restart webhook-attempt = %d, want 1 (the cut-off attempt never finished)", got[1].attempt)
	}
	waitFor(t, 5*time.Second, "delivery succeeded", func() bool {
		ds := e.deliveries(sid)
		return len(ds) == 1 && ds[0].Status == StatusSucceeded && len(ds[0].Attempts) == 1
	})
}

// Shutdown tolerates stop-before-start and a second call; Start refuses a
// second call and a call after Shutdown.
func TestStartShutdownContract(t *testing.T) {
	t.Parallel()
	e := bareEnv(t, testConfig())
	ctx := t.Context()
	if err := e.d.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown before Start = %v", err)
	}
	if err := e.d.Start(ctx); err == nil {
		t.Error("Start after Shutdown = nil")
	}
	d, err := New(e.rdb, testConfig())
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctx); err == nil {
		t.Error("second Start = nil")
	}
	for i := range 2 {
		if err := d.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown #%s = %v", strconv.Itoa(i+1), err)
		}
	}
}
