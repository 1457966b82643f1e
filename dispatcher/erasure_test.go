package dispatcher

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/sessiond/sessiond/internal/redistest"
	"github.com/sessiond/sessiond/lifecycle"
)

// When the lifecycle purges a deleted session, the dispatcher drops its
// deliveries: its retry and dead (archived) tasks leave Asynq, its
// deliveries hash goes, no key is named after it any more; a retry of it
// that still runs is not sent, and a replay answers ErrDeliveryNotFound.
func TestPurgeDropsDeliveries(t *testing.T) {
	t.Parallel()
	redistest.ForEachTopology(t, func(t *testing.T, tg redistest.Target) {
		failing, gone, ok := newReceiver(t, testSecret), newReceiver(t, testSecret), newReceiver(t, testSecret)
		failing.setAnswer(func(w http.ResponseWriter, _ *http.Request, _ int) int {
			return answerCode(w, http.StatusInternalServerError)
		})
		gone.setAnswer(func(w http.ResponseWriter, _ *http.Request, _ int) int { return answerCode(w, http.StatusGone) })
		cfg := testConfig(failing.endpoint("failing"), gone.endpoint("gone"), ok.endpoint("ok"))
		cfg.RetrySchedule = []time.Duration{time.Hour} // the retries wait in Asynq
		const purgeAfter = time.Hour
		e := bareEnv(t, tg, cfg, func(c *lifecycle.Config) { c.PurgeAfter = purgeAfter })
		if err := e.d.Start(e.ctx); err != nil {
			t.Fatal(err)
		}
		sid := e.create("user-1")
		created := e.events(sid)[0]
		// Three deliveries: a retry scheduled, a dead one archived, a
		// success.
		retryID := deliveryID(sid, created.ID, "failing")
		deadID := deliveryID(sid, created.ID, "gone")
		e.waitStatus(sid, retryID, StatusFailed, 1)
		e.waitStatus(sid, deadID, StatusDead, 1)
		e.waitStatus(sid, deliveryID(sid, created.ID, "ok"), StatusSucceeded, 1)
		for id, want := range map[string]asynq.TaskState{retryID: asynq.TaskStateScheduled, deadID: asynq.TaskStateArchived} {
			if info, err := e.task(sid, id); err != nil || info.State != want {
				t.Fatalf("task %s: %+v, %v; want %v", id, info, err, want)
			}
		}

		// Deleted (expired and deleted events: more deliveries), then
		// purged once PurgeAfter has passed on the lifecycle's clock.
		if err := e.svc.Delete(e.ctx, sid); err != nil {
			t.Fatal(err)
		}
		deleted := e.event(sid, lifecycle.EventDeleted)
		e.waitStatus(sid, deliveryID(sid, deleted.ID, "failing"), StatusFailed, 1)
		e.waitStatus(sid, deliveryID(sid, deleted.ID, "ok"), StatusSucceeded, 1)
		before := e.deliveries(sid)
		e.clock.Advance(purgeAfter + time.Second)
		if purged, err := e.svc.Run(e.ctx, lifecycle.WorkPurge, sid); err != nil || !purged {
			t.Fatalf("purge: %v, %v", purged, err)
		}
		waitFor(t, 10*time.Second, "the deliveries hash dropped", func() bool {
			return e.rdb.Exists(e.ctx, e.keys.Deliveries(e.shard(sid), sid)).Val() == 0
		})
		e.waitRelayed(sid)
		for _, d := range before {
			if !e.taskGone(d.ID) {
				t.Errorf("task of %s (%s) is still in Asynq", d.ID, d.Status)
			}
		}
		// No key is named after the session, and no Asynq key holds it.
		if keys, err := redistest.Keys(e.ctx, e.rdb, e.keys.Prefix()+"*"+sid+"*"); err != nil || len(keys) != 0 {
			t.Errorf("keys named after the purged session: %v %v", keys, err)
		}
		for _, q := range e.keys.WebhookQueues() {
			text, err := redistest.Contents(e.ctx, e.rdb, "asynq:{"+q+"}*")
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(text, sid) {
				t.Errorf("queue %s still holds the purged session:\n%s", q, text)
			}
		}
		if ds := e.deliveries(sid); len(ds) != 0 {
			t.Errorf("Deliveries of a purged session = %+v", ds)
		}
		for _, d := range before {
			if _, err := e.d.Replay(e.ctx, d.ID); !errors.Is(err, ErrDeliveryNotFound) {
				t.Errorf("Replay(%s) = %v, want ErrDeliveryNotFound", d.ID, err)
			}
		}

		// A retry that escaped the drop (a replica enqueued it meanwhile)
		// runs, finds the session purged and sends nothing.
		sentBefore := len(failing.receipts())
		dropped := e.d.Stats().Dropped
		if err := e.d.enqueue(e.ctx, created, retryID, &taskPayload{Delivery: retryID, Cursor: created.Cursor, Base: 1, Failed: 1}, 0, 1); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "the late retry to run", func() bool {
			return e.taskGone(retryID) && e.d.Stats().Dropped > dropped
		})
		if n := len(failing.receipts()); n != sentBefore {
			t.Errorf("a purged session's retry was sent (%d requests, had %d)", n, sentBefore)
		}
		if e.rdb.Exists(e.ctx, e.keys.Deliveries(e.shard(sid), sid)).Val() != 0 {
			t.Error("the late retry wrote a record for the purged session")
		}
	})
}

// A retry puts the webhook body together afresh from the outbox and the
// session's event details, so a redaction between two attempts reaches
// it: the retry carries no tags and no decision reason.
func TestRedactionReachesRetries(t *testing.T) {
	t.Parallel()
	redistest.ForEachTopology(t, func(t *testing.T, tg redistest.Target) {
		rv := newReceiver(t, testSecret)
		rv.setAnswer(func(w http.ResponseWriter, _ *http.Request, seen int) int {
			if seen == 0 {
				return answerCode(w, http.StatusServiceUnavailable)
			}
			return answerCode(w, http.StatusOK)
		})
		ep := rv.endpoint("default")
		ep.Events = []string{"session.declined"}
		cfg := testConfig(ep)
		cfg.RetrySchedule = []time.Duration{time.Second} // time to redact in between
		e := newEnv(t, tg, cfg)
		sid := e.create("user-1")
		if _, err := e.svc.Update(e.ctx, sid, lifecycle.UpdateRequest{Tags: &[]string{"vip-customer"}}); err != nil {
			t.Fatal(err)
		}
		for _, s := range []lifecycle.Status{lifecycle.StatusStarted, lifecycle.StatusSubmitted} {
			if _, err := e.svc.Progress(e.ctx, sid, s); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := e.svc.Decide(e.ctx, sid, lifecycle.DecisionRequest{Status: lifecycle.StatusDeclined, Reason: "passport expired"}); err != nil {
			t.Fatal(err)
		}
		ev := e.event(sid, "session.declined")
		first := rv.waitN(ev.ID, 1, 5*time.Second)[0]
		for _, secret := range []string{"vip-customer", "passport expired"} {
			if !strings.Contains(string(first.body), secret) {
				t.Fatalf("first attempt's body lacks %q: %s", secret, first.body)
			}
		}
		if _, err := e.svc.Redact(e.ctx, sid); err != nil {
			t.Fatal(err)
		}
		retry := rv.waitN(ev.ID, 2, 10*time.Second)[1]
		for _, secret := range []string{"vip-customer", "passport expired"} {
			if strings.Contains(string(retry.body), secret) {
				t.Errorf("the retry after a redaction still carries %q: %s", secret, retry.body)
			}
		}
		if string(retry.body) != string(e.body(ev)) || !strings.Contains(string(retry.body), `"redacted_at"`) {
			t.Errorf("retry body = %s, want %s", retry.body, e.body(ev))
		}
		if retry.attempt != 2 || retry.v1Valid != 1 {
			t.Errorf("retry: attempt %d, valid signatures %d", retry.attempt, retry.v1Valid)
		}
	})
}
