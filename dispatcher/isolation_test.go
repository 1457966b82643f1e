package dispatcher

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessiond/sessiond/internal/keyspace"
	"github.com/sessiond/sessiond/internal/redistest"
	"github.com/sessiond/sessiond/lifecycle"
)

// One endpoint hangs, another is healthy. The healthy one's deliveries are
// not delayed; the hanging one's are deferred by its concurrency limit and
// circuit breaker without using up their attempts, and all go through once
// it recovers.
func TestHangingEndpointDoesNotDelayHealthy(t *testing.T) {
	t.Parallel()
	redistest.ForEachTopology(t, func(t *testing.T, tg redistest.Target) { testHangingEndpoint(t, tg) })
}

func testHangingEndpoint(t *testing.T, tg redistest.Target) {
	const sessions = 30
	fast, slow := newReceiver(t, testSecret), newReceiver(t, testSecret)
	var hanging atomic.Bool
	hanging.Store(true)
	release := make(chan struct{})
	var closeOnce sync.Once
	t.Cleanup(func() { closeOnce.Do(func() { close(release) }) })
	slow.setAnswer(func(w http.ResponseWriter, r *http.Request, _ int) int {
		if hanging.Load() {
			select {
			case <-r.Context().Done():
				return 0
			case <-release: // recovered: answer below
			}
		}
		w.WriteHeader(http.StatusOK)
		return http.StatusOK
	})
	cfg := testConfig(fast.endpoint("fast"), slow.endpoint("slow"))
	cfg.Timeout = 2 * time.Second
	cfg.EndpointConcurrency = 2
	cfg.BreakerThreshold, cfg.BreakerPeriod = 2, time.Millisecond
	cfg.BreakerCooldown = 300 * time.Millisecond
	// Three retries: if deferrals used up attempts, these deliveries,
	// deferred many times, would be dead.
	cfg.RetrySchedule = []time.Duration{10 * time.Millisecond, 10 * time.Millisecond, 10 * time.Millisecond}
	e := newEnv(t, tg, cfg)

	eventIDs, worst := e.createAndTime(fast, sessions, 5*time.Second)
	// Well under the hanging endpoint's timeout: nothing waited for it.
	if worst > time.Second {
		t.Errorf("slowest delivery to the healthy endpoint took %v", worst)
	}

	// Let the hanging endpoint time out a few times, then recover.
	waitFor(t, 10*time.Second, "the breaker to open and deliveries to be deferred", func() bool {
		return e.d.endpoints().endpoint("slow").breaker.isOpen() && e.d.Stats().Deferred > sessions
	})
	hanging.Store(false)
	closeOnce.Do(func() { close(release) })
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, id := range eventIDs {
			var got []string
			for _, r := range slow.byID(id) {
				got = append(got, fmt.Sprintf("%d:%d@%s", r.attempt, r.answerCode, r.at.Format("05.000")))
			}
			t.Logf("%s: %v", id, got)
		}
		t.Logf("stats %+v now %s", e.d.Stats(), time.Now().Format("05.000"))
	})
	slow.waitUntil(30*time.Second, "every delivery to the slow endpoint to succeed", func() bool {
		return slow.lastAnswered(eventIDs, http.StatusOK)
	})
	st := e.d.Stats()
	if st.Dead != 0 {
		t.Errorf("%d deliveries dead; deferrals must not use up attempts", st.Dead)
	}
	// Attempt numbers count only real attempts: consecutive from 1.
	for _, id := range eventIDs {
		for i, r := range slow.byID(id) {
			if r.attempt != i+1 {
				t.Errorf("%s: request %d has webhook-attempt %d", id, i, r.attempt)
			}
		}
	}
	t.Logf("stats: %+v; slowest healthy delivery %v", st, worst)
}

// lineConfig is a test Config with one endpoint, id at rv, of the given
// slots, whose timeout the tests' held requests never reach (a held
// request is no failure).
func lineConfig(rv *receiver, id string, slots int) Config {
	cfg := testConfig(rv.endpoint(id))
	cfg.Timeout = 20 * time.Second
	cfg.EndpointConcurrency = slots
	return cfg
}

// An endpoint whose slots are all taken: the first attempts beyond them
// wait in its line in memory, the relay stops reading once the line is
// long, and the rest of the backlog waits in the outbox. Nothing goes
// through Asynq; once the endpoint answers, every event is delivered once.
func TestBusyEndpointLine(t *testing.T) {
	t.Parallel()
	redistest.ForEachTopology(t, func(t *testing.T, tg redistest.Target) { testBusyEndpointLine(t, tg) })
}

func testBusyEndpointLine(t *testing.T, tg redistest.Target) {
	const sessions = 100
	rv, release := holdingReceiver(t, testSecret)
	cfg := lineConfig(rv, "busy", 2)
	cfg.RelayBatch = 4
	e := newEnv(t, tg, cfg)
	ep := e.d.endpoints().endpoint("busy")
	lineCap := ep.limit.lineCap
	if lineCap+cfg.EndpointConcurrency >= sessions {
		t.Fatalf("line cap %d: the test needs a backlog longer than the line", lineCap)
	}

	for i := range sessions {
		e.create(fmt.Sprintf("line-%d", i))
	}
	waitFor(t, 10*time.Second, "the endpoint's line to fill", func() bool {
		return ep.limit.saturated() && len(rv.receipts()) == cfg.EndpointConcurrency
	})
	// Give the relay time to read more, if it would (it polls for room
	// every roomPoll): it must not.
	time.Sleep(3 * roomPoll)
	read := int64(0)
	for sh := range keyspace.Shards {
		read += e.pending(keyspace.Shard(sh))
	}
	if max := int64(cfg.EndpointConcurrency + lineCap); read > max {
		t.Errorf("%d outbox entries read while the endpoint was busy, want at most %d (its slots and line)", read, max)
	}
	if n := len(rv.receipts()); n != cfg.EndpointConcurrency {
		t.Errorf("%d requests in flight, want the %d slots", n, cfg.EndpointConcurrency)
	}
	if st := e.d.Stats(); st.Deferred != 0 || st.Waited == 0 {
		t.Errorf("stats while busy: %+v; want first attempts waiting and none deferred", st)
	}

	release()
	rv.waitUntil(20*time.Second, "every event delivered", func() bool { return len(rv.receipts()) >= sessions })
	waitFor(t, 10*time.Second, "the outbox acknowledged", func() bool {
		n := int64(0)
		for sh := range keyspace.Shards {
			n += e.pending(keyspace.Shard(sh))
		}
		return n == 0
	})
	seen := map[string]int{}
	for _, r := range rv.receipts() {
		seen[r.id]++
		if r.attempt != 1 || r.v1Valid != 1 {
			t.Errorf("%s: webhook-attempt %d, %d valid signatures", r.id, r.attempt, r.v1Valid)
		}
	}
	if len(seen) != sessions {
		t.Errorf("%d events delivered, want %d", len(seen), sessions)
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("%s delivered %d times", id, n)
		}
	}
	st := e.d.Stats()
	if st.Deferred != 0 || st.Attempts != sessions || st.Succeeded != sessions {
		t.Errorf("stats: %+v; want %d first attempts, all succeeded, none deferred", st, sessions)
	}
	if ep.limit.waiting() != 0 {
		t.Errorf("%d first attempts still in the line", ep.limit.waiting())
	}
}

// A retry that frees a slot hands it to the first attempts waiting in the
// line, as a first attempt does.
func TestRetryHandsSlotToLine(t *testing.T) {
	t.Parallel()
	redistest.ForEachTopology(t, func(t *testing.T, tg redistest.Target) {
		rv := newReceiver(t, testSecret)
		released, release := releaser(t)
		var firstID atomic.Value
		rv.setAnswer(func(w http.ResponseWriter, r *http.Request, seen int) int {
			id := r.Header.Get("webhook-id")
			firstID.CompareAndSwap(nil, id)
			if id == firstID.Load() {
				if seen == 0 {
					return answerCode(w, http.StatusInternalServerError)
				}
				if !held(r, released) { // the retry holds the only slot
					return 0
				}
			}
			return answerCode(w, http.StatusNoContent)
		})
		cfg := lineConfig(rv, "one", 1)
		e := newEnv(t, tg, cfg)
		ep := e.d.endpoints().endpoint("one")

		e.create("retried")
		rv.waitUntil(10*time.Second, "the retry to hold the slot", func() bool { return len(rv.receipts()) == 2 })
		const waiting = 3 // more than wait in the line: the relay leaves the rest in the outbox
		for i := range waiting {
			e.create(fmt.Sprintf("waiting-%d", i))
		}
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("stats %+v, waiting %d, receipts %d", e.d.Stats(), ep.limit.waiting(), len(rv.receipts()))
			}
		})
		waitFor(t, 10*time.Second, "first attempts waiting for the retry's slot", func() bool {
			return ep.limit.saturated()
		})
		release()
		rv.waitUntil(10*time.Second, "the waiting first attempts delivered", func() bool {
			return len(rv.receipts()) == 2+waiting
		})
		if st := e.d.Stats(); st.Deferred != 0 || st.Waited == 0 || st.Succeeded != waiting {
			t.Errorf("stats: %+v; want %d first attempts succeeded, some after waiting, none deferred", st, waiting)
		}
	})
}

// A retry that finds its endpoint's slots taken waits for one ahead of the
// first attempts in the line, instead of being deferred behind them.
func TestRetryServedBeforeLine(t *testing.T) {
	t.Parallel()
	redistest.ForEachTopology(t, func(t *testing.T, tg redistest.Target) {
		rv := newReceiver(t, testSecret)
		released, release := releaser(t)
		var mu sync.Mutex
		var order []string // webhook-ids in the order their first request came
		rv.setAnswer(func(w http.ResponseWriter, r *http.Request, seen int) int {
			id := r.Header.Get("webhook-id")
			mu.Lock()
			if seen == 0 {
				order = append(order, id)
			}
			n := len(order)
			mu.Unlock()
			switch {
			case n == 1 && seen == 0: // A's first attempt fails: a retry follows
				return answerCode(w, http.StatusInternalServerError)
			case n == 2 && seen == 0 && order[1] == id: // B holds the only slot
				if !held(r, released) {
					return 0
				}
			}
			return answerCode(w, http.StatusNoContent)
		})
		cfg := lineConfig(rv, "one", 1)
		e := newEnv(t, tg, cfg)
		ep := e.d.endpoints().endpoint("one")
		a := e.events(e.create("retried"))[0].ID
		rv.waitN(a, 1, 10*time.Second)
		b := e.events(e.create("holding"))[0].ID
		rv.waitN(b, 1, 10*time.Second)
		e.create("waiting")
		waitFor(t, 10*time.Second, "A's retry waiting for the slot, a first attempt in the line", func() bool {
			ep.limit.mu.Lock()
			defer ep.limit.mu.Unlock()
			return len(ep.limit.retries) == 1 && len(ep.limit.line) == 1
		})
		release()
		rv.waitUntil(10*time.Second, "every delivery made", func() bool { return len(rv.receipts()) == 4 })
		got := rv.receipts()
		if got[2].id != a || got[2].attempt != 2 {
			t.Errorf("after B, request %s (attempt %d) got the slot, want A's retry %s", got[2].id, got[2].attempt, a)
		}
		if st := e.d.Stats(); st.Deferred != 0 {
			t.Errorf("stats %+v: a delivery was deferred", st)
		}
	})
}

// Shutdown does not make the first attempts waiting in a line: their
// entries stay pending, and another replica claims and delivers them.
func TestShutdownLeavesLineToClaim(t *testing.T) {
	t.Parallel()
	redistest.ForEachTopology(t, func(t *testing.T, tg redistest.Target) {
		const sessions = 20
		rv := newReceiver(t, testSecret)
		var holding atomic.Bool
		holding.Store(true)
		rv.setAnswer(func(w http.ResponseWriter, r *http.Request, _ int) int {
			if holding.Load() {
				<-r.Context().Done() // until the shutdown cuts it off
				return 0
			}
			return answerCode(w, http.StatusNoContent)
		})
		cfg := lineConfig(rv, "busy", 2)
		e := newEnv(t, tg, cfg)
		ep := e.d.endpoints().endpoint("busy")
		var ids []string
		for i := range sessions {
			ids = append(ids, e.events(e.create(fmt.Sprintf("line-%d", i)))[0].ID)
		}
		waitFor(t, 10*time.Second, "the line to fill", ep.limit.saturated)

		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := e.d.Shutdown(ctx); err == nil {
			t.Error("Shutdown cut the held attempts off, but returned no error")
		}
		if n := ep.limit.waiting(); n != 0 {
			t.Errorf("%d first attempts still waiting after Shutdown", n)
		}
		if st := e.d.Stats(); st.Attempts != int64(cfg.EndpointConcurrency) {
			t.Errorf("the stopped replica made %d attempts, want only the %d in its slots", st.Attempts, cfg.EndpointConcurrency)
		}

		holding.Store(false)
		e.start(cfg)
		rv.waitUntil(10*time.Second, "every event delivered by the other replica", func() bool {
			return rv.lastAnswered(ids, http.StatusNoContent)
		})
	})
}

// First attempts that waited in the line of an endpoint deleted meanwhile
// are dropped, not made; the same entries' deliveries to another endpoint
// are made once each, and every entry is acknowledged.
func TestLineOfDeletedEndpoint(t *testing.T) {
	t.Parallel()
	redistest.ForEachTopology(t, func(t *testing.T, tg redistest.Target) {
		const sessions = 3
		keep, releaseKeep := holdingReceiver(t, testSecret)
		del, releaseDel := holdingReceiver(t)
		cfg := lineConfig(keep, "keep", 1)
		e := newEnv(t, tg, cfg)
		in := e.createAPIEndpoint(e.d, del.url())
		var ids []string
		for i := range sessions {
			ids = append(ids, e.events(e.create(fmt.Sprintf("deleted-%d", i)))[0].ID)
		}
		epKeep, epDel := e.d.endpoints().endpoint("keep"), e.d.endpoints().endpoint(in.ID)
		waitFor(t, 10*time.Second, "first attempts waiting in both lines", func() bool {
			return epKeep.limit.saturated() && epDel.limit.saturated()
		})
		if err := e.d.DeleteEndpoint(e.ctx, in.ID); err != nil {
			t.Fatal(err)
		}
		releaseDel()
		waitFor(t, 10*time.Second, "the deleted endpoint's line emptied", func() bool { return epDel.limit.waiting() == 0 })
		// The kept endpoint's deliveries of the same entries wait on past
		// ClaimIdle: the entries must stay this replica's, not be claimed and
		// sent again.
		time.Sleep(3 * cfg.ClaimIdle)
		releaseKeep()
		keep.waitUntil(10*time.Second, "every event delivered to the kept endpoint", func() bool {
			return keep.lastAnswered(ids, http.StatusNoContent)
		})
		waitFor(t, 10*time.Second, "every outbox entry acknowledged", func() bool {
			n := int64(0)
			for sh := range keyspace.Shards {
				n += e.pending(keyspace.Shard(sh))
			}
			return n == 0
		})
		for _, id := range ids {
			if n := len(keep.byID(id)); n != 1 {
				t.Errorf("event %s reached the kept endpoint %d times, want once", id, n)
			}
		}
		if n := len(del.receipts()); n != 1 {
			t.Errorf("the deleted endpoint got %d requests, want only the one in flight at the delete", n)
		}
		if st := e.d.Stats(); st.Dropped == 0 {
			t.Errorf("stats %+v: no delivery dropped", st)
		}
	})
}

// A first attempt that waited in the line of an endpoint disabled
// meanwhile is not made: the delivery is dead, with the reason, and can be
// replayed.
func TestLineOfDisabledEndpoint(t *testing.T) {
	t.Parallel()
	redistest.ForEachTopology(t, func(t *testing.T, tg redistest.Target) {
		rv, release := holdingReceiver(t)
		cfg := testConfig()
		cfg.Timeout, cfg.EndpointConcurrency = 20*time.Second, 1
		e := newEnv(t, tg, cfg)
		in := e.createAPIEndpoint(e.d, rv.url())
		sessions := []string{e.create("disabled-0"), e.create("disabled-1")}
		waitFor(t, 10*time.Second, "a first attempt waiting in the line", e.d.endpoints().endpoint(in.ID).limit.saturated)
		disabled := true
		if _, err := e.d.UpdateEndpoint(e.ctx, in.ID, EndpointPatch{Disabled: &disabled}); err != nil {
			t.Fatal(err)
		}
		held := rv.receipts()[0].id // the attempt in flight; the other one waits
		release()
		waiting := sessions[0]
		if e.events(waiting)[0].ID == held {
			waiting = sessions[1]
		}
		id := deliveryID(waiting, e.events(waiting)[0].ID, in.ID)
		d := e.waitStatus(waiting, id, StatusDead, 0)
		if d.Error != "endpoint is disabled" || len(d.Attempts) != 0 {
			t.Errorf("the waiting delivery: %+v; want dead for the disabled endpoint, with no attempt", d)
		}
		if n := len(rv.receipts()); n != 1 {
			t.Errorf("the disabled endpoint got %d requests, want only the one in flight", n)
		}
	})
}

// A redaction made while a first attempt waits in the line reaches it: the
// body is put together when the attempt gets its slot.
func TestRedactionReachesTheLine(t *testing.T) {
	t.Parallel()
	redistest.ForEachTopology(t, func(t *testing.T, tg redistest.Target) {
		rv, release := holdingReceiver(t, testSecret)
		cfg := lineConfig(rv, "one", 1)
		cfg.Endpoints[0].Events = []string{"session.declined"}
		e := newEnv(t, tg, cfg)
		decline := func(ref string, tags []string, reason string) string {
			sid := e.create(ref)
			if _, err := e.svc.Update(e.ctx, sid, lifecycle.UpdateRequest{Tags: &tags}); err != nil {
				t.Fatal(err)
			}
			for _, st := range []lifecycle.Status{lifecycle.StatusStarted, lifecycle.StatusSubmitted} {
				if _, err := e.svc.Progress(e.ctx, sid, st); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := e.svc.Decide(e.ctx, sid, lifecycle.DecisionRequest{Status: lifecycle.StatusDeclined, Reason: reason}); err != nil {
				t.Fatal(err)
			}
			return sid
		}
		decline("user-0", nil, "blurry")
		rv.waitUntil(10*time.Second, "the first decline held", func() bool { return len(rv.receipts()) == 1 })
		sid := decline("user-1", []string{"vip-customer"}, "passport expired")
		waitFor(t, 10*time.Second, "the second decline waiting in the line", e.d.endpoints().endpoint("one").limit.saturated)
		if _, err := e.svc.Redact(e.ctx, sid); err != nil {
			t.Fatal(err)
		}
		release()
		ev := e.event(sid, "session.declined")
		got := rv.waitN(ev.ID, 1, 10*time.Second)[0]
		for _, secret := range []string{"vip-customer", "passport expired"} {
			if strings.Contains(string(got.body), secret) {
				t.Errorf("the attempt after a redaction still carries %q: %s", secret, got.body)
			}
		}
		if string(got.body) != string(e.body(ev)) || got.v1Valid != 1 {
			t.Errorf("body = %s (valid signatures %d), want %s", got.body, got.v1Valid, e.body(ev))
		}
	})
}
