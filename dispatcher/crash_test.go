package dispatcher

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/internal/redistest"
	"github.com/sessiond/sessiond/lifecycle"
)

// deadRead reads every new entry of the outbox stream of ref's shard as a
// consumer that then dies: the entries stay pending, idle, in its name.
func (e *env) deadRead(ref string) {
	e.t.Helper()
	stream := e.keys.Outbox(lifecycle.ShardOfRef(ref))
	err := e.rdb.XReadGroup(e.ctx, &redis.XReadGroupArgs{
		Group: relayGroup, Consumer: "dead", Streams: []string{stream, ">"}, Block: -1,
	}).Err()
	if err != nil {
		e.t.Fatalf("read as the dead consumer: %v", err)
	}
}

// groupFor creates the outbox consumer group of ref's shard.
func (e *env) groupFor(ref string) {
	e.t.Helper()
	if err := e.d.ensureGroup(e.ctx, e.keys.Outbox(lifecycle.ShardOfRef(ref))); err != nil {
		e.t.Fatal(err)
	}
}

// An outbox entry that a replica read and never acknowledged (it died) is
// claimed by another after ClaimIdle, not before, and delivered; its
// record acknowledges it.
func TestUnacknowledgedEntriesAreClaimed(t *testing.T) {
	t.Parallel()
	redistest.ForEachTopology(t, func(t *testing.T, tg redistest.Target) {
		rv := newReceiver(t, testSecret)
		cfg := testConfig(rv.endpoint("default"))
		e := bareEnv(t, tg, cfg)
		e.groupFor("user-1")
		sid := e.create("user-1")
		e.deadRead("user-1")
		read := time.Now()
		if err := e.d.Start(e.ctx); err != nil {
			t.Fatal(err)
		}
		ev := e.events(sid)[0]
		got := rv.waitN(ev.ID, 1, 10*time.Second)
		if got[0].attempt != 1 {
			t.Errorf("webhook-attempt = %d, want 1", got[0].attempt)
		}
		// Claimed once idle for ClaimIdle, within a maintenance period
		// (and the slack of a loaded test machine) after.
		if took := got[0].at.Sub(read); took < cfg.ClaimIdle || took > cfg.ClaimIdle+maintainPeriod(cfg.ClaimIdle)+2*time.Second {
			t.Errorf("delivered %v after the dead read, want just after ClaimIdle (%v)", took, cfg.ClaimIdle)
		}
		e.waitStatus(sid, deliveryID(sid, ev.ID, "default"), StatusSucceeded, 1)
		waitFor(t, 5*time.Second, "the entry acknowledged", func() bool { return e.pending(ev.Shard) == 0 })
		if n := len(rv.byID(ev.ID)); n != 1 {
			t.Errorf("sent %d times", n)
		}
	})
}

// A claimed entry's deliveries that already have a record (the dead
// replica made them) are not sent again; the others are.
func TestClaimSkipsRecordedDeliveries(t *testing.T) {
	t.Parallel()
	redistest.ForEachTopology(t, func(t *testing.T, tg redistest.Target) {
		done, todo := newReceiver(t, testSecret), newReceiver(t, testSecret)
		cfg := testConfig(done.endpoint("done"), todo.endpoint("todo"))
		e := bareEnv(t, tg, cfg)
		e.groupFor("user-1")
		sid := e.create("user-1")
		e.deadRead("user-1")
		ev := e.events(sid)[0]
		// What the dead replica recorded before it died: one of the two
		// deliveries, so the entry was not acknowledged.
		at := time.Now()
		err := e.d.store.record(e.ctx, &write{
			shard: ev.Shard, sessionID: sid, eventID: ev.ID, endpointID: "done", cursor: ev.Cursor, eventType: ev.Type,
			status: StatusSucceeded, attempt: &Attempt{Attempt: 1, At: lifecycle.At(at), StatusCode: http.StatusNoContent},
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.d.Start(e.ctx); err != nil {
			t.Fatal(err)
		}
		todo.waitN(ev.ID, 1, 10*time.Second)
		e.waitStatus(sid, deliveryID(sid, ev.ID, "todo"), StatusSucceeded, 1)
		waitFor(t, 5*time.Second, "the entry acknowledged", func() bool { return e.pending(ev.Shard) == 0 })
		if n := len(done.receipts()); n != 0 {
			t.Errorf("a recorded delivery was sent again (%d requests)", n)
		}
		if d, _ := e.delivery(sid, deliveryID(sid, ev.ID, "done")); len(d.Attempts) != 1 || d.Status != StatusSucceeded {
			t.Errorf("recorded delivery changed: %+v", d)
		}
	})
}

// A live replica whose receiver is slow keeps its entries fresh: neither
// another replica nor itself claims them while the first attempts are in
// flight, so each event is sent once.
func TestSlowReceiverKeepsItsEntries(t *testing.T) {
	t.Parallel()
	redistest.ForEachTopology(t, func(t *testing.T, tg redistest.Target) {
		rv := newReceiver(t, testSecret)
		cfg := testConfig(rv.endpoint("default"))
		hold := 4 * cfg.ClaimIdle
		rv.setAnswer(func(w http.ResponseWriter, r *http.Request, _ int) int {
			select { // a slow receiver, not a wait for work
			case <-time.After(hold):
			case <-r.Context().Done():
			}
			return answerCode(w, http.StatusOK)
		})
		e := newEnv(t, tg, cfg)
		replica := e.start(cfg)
		var ids []string
		var sids []string
		for _, ref := range []string{"user-1", "user-2", "user-3", "user-4"} {
			sid := e.create(ref)
			sids = append(sids, sid)
			ids = append(ids, e.events(sid)[0].ID)
		}
		for i, sid := range sids {
			e.waitStatus(sid, deliveryID(sid, ids[i], "default"), StatusSucceeded, 1)
			e.waitRelayed(sid)
		}
		for _, id := range ids {
			if n := len(rv.byID(id)); n != 1 {
				t.Errorf("%s sent %d times", id, n)
			}
		}
		if a := e.d.Stats().Attempts + replica.Stats().Attempts; a != int64(len(ids)) {
			t.Errorf("%d attempts for %d events", a, len(ids))
		}
	})
}

// A worker SIGKILLed mid-retry leaves its task active with a lease nobody
// extends. A running dispatcher gives it back within OrphanAfter, not
// Asynq's 60–120 s, and without using up an attempt.
func TestOrphanedTaskIsGivenBack(t *testing.T) {
	t.Parallel()
	redistest.ForEachTopology(t, func(t *testing.T, tg redistest.Target) {
		rv := newReceiver(t, testSecret)
		cfg := testConfig(rv.endpoint("default"))
		cfg.OrphanAfter = 10 * time.Second
		e := bareEnv(t, tg, cfg)
		// The entry was delivered (first attempt failed) by the dead
		// process: the group has read past it.
		sid := e.create("user-1")
		ev := e.events(sid)[0]
		if err := e.rdb.XGroupCreate(e.ctx, e.keys.Outbox(ev.Shard), relayGroup, "$").Err(); err != nil {
			t.Fatal(err)
		}
		did := deliveryID(sid, ev.ID, "default")
		if err := e.d.enqueue(e.ctx, ev, did, &taskPayload{Delivery: did, Cursor: ev.Cursor, Base: 1, Failed: 1}, 0, 3); err != nil {
			t.Fatal(err)
		}
		// What Asynq's dequeue does, for a worker that then died 12 s ago
		// (its lease, 30 s from its last extension, has 18 s left).
		q := e.queue(sid)
		if err := e.rdb.LMove(e.ctx, asynqPendingKey(q), asynqActiveKey(q), "RIGHT", "LEFT").Err(); err != nil {
			t.Fatal(err)
		}
		e.rdb.ZAdd(e.ctx, asynqLeaseKey(q), redis.Z{Score: float64(time.Now().Add(18 * time.Second).Unix()), Member: did})
		e.rdb.HSet(e.ctx, asynqTaskPrefix(q)+did, "state", "active")

		started := time.Now()
		if err := e.d.Start(e.ctx); err != nil {
			t.Fatal(err)
		}
		got := rv.waitN(ev.ID, 1, 10*time.Second)
		if got[0].attempt != 2 {
			t.Errorf("webhook-attempt = %d, want 2: a crash does not use up an attempt", got[0].attempt)
		}
		if took := time.Since(started); took > 3*time.Second {
			t.Errorf("given back after %v", took)
		}
		if n := e.d.Stats().Requeued; n != 1 {
			t.Errorf("Requeued = %d, want 1", n)
		}
		if n := len(rv.receipts()); n != 1 {
			t.Errorf("receiver got %d requests, want 1", n)
		}
	})
}

// The sweep leaves live leases alone and gives back only stale ones.
func TestRequeueOrphansLeavesLiveLeases(t *testing.T) {
	t.Parallel()
	redistest.ForEachTopology(t, func(t *testing.T, tg redistest.Target) {
		rdb := tg.Client
		ctx := t.Context()
		q := tg.Namespace + ":test"
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
	})
}

// At the shutdown deadline the deliveries still in flight are cut off: a
// first attempt leaves its outbox entry unacknowledged and unrecorded, and
// the next process claims it and makes it again as attempt 1; a retry is
// given back to Asynq due at once with its retry count unchanged, and the
// next process makes it with the same attempt number.
func TestShutdownCutsOffAndGivesBack(t *testing.T) {
	t.Parallel()
	redistest.ForEachTopology(t, func(t *testing.T, tg redistest.Target) {
		first, retry := newReceiver(t, testSecret), newReceiver(t, testSecret)
		var hang atomic.Bool
		hang.Store(true)
		hanging := func(w http.ResponseWriter, r *http.Request) int {
			if hang.Load() {
				<-r.Context().Done()
				return 0
			}
			return answerCode(w, http.StatusOK)
		}
		first.setAnswer(func(w http.ResponseWriter, r *http.Request, _ int) int { return hanging(w, r) })
		retry.setAnswer(func(w http.ResponseWriter, r *http.Request, seen int) int {
			if seen == 0 {
				return answerCode(w, http.StatusInternalServerError)
			}
			return hanging(w, r)
		})
		cfg := testConfig(first.endpoint("first"), retry.endpoint("retry"))
		cfg.Timeout = 30 * time.Second
		e := newEnv(t, tg, cfg)
		sid := e.create("user-1")
		ev := e.events(sid)[0]
		first.waitN(ev.ID, 1, 5*time.Second)
		retry.waitN(ev.ID, 2, 10*time.Second)

		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		began := time.Now()
		if err := e.d.Shutdown(ctx); err == nil {
			t.Error("Shutdown = nil, want the cut-off reported")
		}
		// The relays' blocking reads (relayBlock) may hold it a little
		// past the deadline.
		if took := time.Since(began); took > relayBlock+time.Second {
			t.Errorf("Shutdown took %v with a 1s deadline", took)
		}
		// The first attempt: no record, the entry still pending.
		if d, ok := e.delivery(sid, deliveryID(sid, ev.ID, "first")); ok {
			t.Errorf("a cut-off first attempt was recorded: %+v", d)
		}
		if n := e.pending(ev.Shard); n != 1 {
			t.Errorf("%d outbox entries pending, want 1", n)
		}
		// The retry: due at once, retry count unchanged.
		info, err := e.task(sid, deliveryID(sid, ev.ID, "retry"))
		if err != nil {
			t.Fatal(err)
		}
		due := info.State == asynq.TaskStatePending || (info.State == asynq.TaskStateRetry && time.Until(info.NextProcessAt) <= time.Second)
		if !due || info.Retried != 0 {
			t.Errorf("cut-off task: state %v, retried %d, next at %v; want due now, retried 0", info.State, info.Retried, info.NextProcessAt)
		}

		hang.Store(false)
		e.start(cfg)
		if got := first.waitN(ev.ID, 2, 10*time.Second); got[1].attempt != 1 {
			t.Errorf("first attempt after the restart: webhook-attempt = %d, want 1 (the cut-off one never finished)", got[1].attempt)
		}
		if got := retry.waitN(ev.ID, 3, 10*time.Second); got[2].attempt != 2 {
			t.Errorf("retry after the restart: webhook-attempt = %d, want 2", got[2].attempt)
		}
		if d := e.waitStatus(sid, deliveryID(sid, ev.ID, "first"), StatusSucceeded, 1); len(d.Attempts) != 1 {
			t.Errorf("first: attempts %+v, want one", d.Attempts)
		}
		if d := e.waitStatus(sid, deliveryID(sid, ev.ID, "retry"), StatusSucceeded, 2); len(d.Attempts) != 2 {
			t.Errorf("retry: attempts %+v, want two", d.Attempts)
		}
		waitFor(t, 5*time.Second, "the entry acknowledged", func() bool { return e.pending(ev.Shard) == 0 })
	})
}

// Shutdown tolerates stop-before-start and a second call; Start refuses a
// second call and a call after Shutdown.
func TestStartShutdownContract(t *testing.T) {
	t.Parallel()
	e := bareEnv(t, redistest.Open(t, "single"), testConfig())
	ctx := t.Context()
	if err := e.d.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown before Start = %v", err)
	}
	if err := e.d.Start(ctx); err == nil {
		t.Error("Start after Shutdown = nil")
	}
	d := e.dispatcher(testConfig())
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctx); err == nil {
		t.Error("second Start = nil")
	}
	for i := range 2 {
		if err := d.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown #%d = %v", i+1, err)
		}
	}
}
