package dispatcher

import (
	"encoding/json"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/sessiond/sessiond/internal/keyspace"
	"github.com/sessiond/sessiond/internal/redistest"
	"github.com/sessiond/sessiond/lifecycle"
)

// TestRecoveryResumesFromItsPosition: a recovery whose walk stopped (a
// crash) after the first event of each shard goes on from the positions it
// saved: it sends the events after them, and not the ones before.
func TestRecoveryResumesFromItsPosition(t *testing.T) {
	redistest.ForEachTopology(t, func(t *testing.T, tg redistest.Target) {
		rv := newReceiver(t)
		e := newEnv(t, tg, testConfig())
		ep, err := e.d.CreateEndpoint(e.ctx, EndpointSpec{URL: rv.url(), Events: []string{"session.created"}})
		if err != nil {
			t.Fatal(err)
		}
		off, on := true, false
		if _, err := e.d.UpdateEndpoint(e.ctx, ep.ID, EndpointPatch{Disabled: &off}); err != nil {
			t.Fatal(err)
		}
		since := e.clock.Now().Add(-time.Minute)
		var ids []string
		for i := range 16 {
			id := e.create("recover-" + strconv.Itoa(i))
			e.waitRelayed(id)
			ids = append(ids, id)
		}
		if n := len(rv.receipts()); n != 0 {
			t.Fatalf("the disabled endpoint got %d webhooks", n)
		}
		if _, err := e.d.UpdateEndpoint(e.ctx, ep.ID, EndpointPatch{Disabled: &on}); err != nil {
			t.Fatal(err)
		}

		// The state a crash leaves after the first page of each shard with
		// events: that shard's first event walked.
		byShard := map[keyspace.Shard][]*lifecycle.Event{}
		for _, id := range ids {
			ev := e.event(id, "session.created")
			byShard[ev.Shard] = append(byShard[ev.Shard], ev)
		}
		rid := "rcv_resume" + strconv.Itoa(int(time.Now().UnixNano()%1e6))
		fields := []any{rcvEndpoint, ep.ID, rcvSince, since.UnixMilli(), rcvUntil, e.clock.Now().Add(time.Minute).UnixMilli(),
			rcvStatus, RecoveryRunning, rcvCreated, e.clock.Now().UnixMilli()}
		walked := map[string]bool{}
		for sh, evs := range byShard {
			slices.SortFunc(evs, func(a, b *lifecycle.Event) int {
				if streamIDLess(a.Cursor, b.Cursor) {
					return -1
				}
				return 1
			})
			fields = append(fields, rcvPosition(sh), evs[0].Cursor)
			walked[evs[0].ID] = true
		}
		fields = append(fields, rcvScanned, len(walked))
		if err := e.rdb.HSet(e.ctx, e.keys.Recovery(rid), fields...).Err(); err != nil {
			t.Fatal(err)
		}
		payload, _ := json.Marshal(recoverPayload{ID: rid})
		if _, err := e.d.client.EnqueueContext(e.ctx, asynq.NewTask(recoverTaskType, payload),
			asynq.TaskID(rid), asynq.Queue(e.d.queues[0])); err != nil {
			t.Fatal(err)
		}

		var rec *Recovery
		waitFor(t, 20*time.Second, "the recovery done", func() bool {
			if rec, err = e.d.Recovery(e.ctx, rid); err != nil {
				t.Fatal(err)
			}
			return rec.Status == RecoveryDone
		})
		want := len(ids) - len(walked)
		if rec.Scanned != int64(len(ids)) || rec.Scheduled != int64(want) || rec.Done != int64(want) {
			t.Errorf("recovery %+v: want %d scanned, %d scheduled and done", rec, len(ids), want)
		}
		got := map[string]int{}
		for _, r := range rv.receipts() {
			got[r.id]++
		}
		for _, id := range ids {
			ev := e.event(id, "session.created")
			switch {
			case walked[ev.ID] && got[ev.ID] != 0:
				t.Errorf("event %s, before the saved position, was sent %d times", ev.ID, got[ev.ID])
			case !walked[ev.ID] && got[ev.ID] != 1:
				t.Errorf("event %s, after the saved position, was sent %d times, want 1", ev.ID, got[ev.ID])
			}
		}
	})
}

// TestTestEventTouchesNoSession: a test event is signed, says "test":true,
// names a session that does not exist, creates none, is in no feed, has a
// record, and a replay sends it again with the same webhook-id.
func TestTestEventTouchesNoSession(t *testing.T) {
	redistest.ForEachTopology(t, func(t *testing.T, tg redistest.Target) {
		rv := newReceiver(t, testSecret)
		e := newEnv(t, tg, testConfig(rv.endpoint("hooks")))
		dl, err := e.d.TestEndpoint(e.ctx, "hooks", "session.declined")
		if err != nil {
			t.Fatal(err)
		}
		if dl.Status != StatusPending || !lifecycle.IsTestEvent(dl.EventID) {
			t.Fatalf("test delivery %+v: want pending, with a test event id", dl)
		}
		got := rv.waitN(dl.EventID, 1, 10*time.Second)[0]
		var body struct {
			Type string `json:"type"`
			Test bool   `json:"test"`
			Data struct {
				ID       string `json:"id"`
				Status   string `json:"status"`
				Sequence int    `json:"sequence"`
			} `json:"data"`
		}
		if err := json.Unmarshal(got.body, &body); err != nil {
			t.Fatal(err)
		}
		if !body.Test || body.Type != "session.declined" || body.Data.ID != dl.SessionID || body.Data.Status != "declined" || body.Data.Sequence != 1 {
			t.Errorf("test event body %s", got.body)
		}
		if got.v1Valid != 1 || !got.hmacValid {
			t.Errorf("test event signatures: v1 valid %d, X-HMAC-SIGNATURE valid %v", got.v1Valid, got.hmacValid)
		}
		if _, err := e.svc.Get(e.ctx, dl.SessionID); err == nil {
			t.Errorf("the test event's session exists")
		}
		feed, err := e.svc.Events(e.ctx, "", 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range feed.Events {
			if ev.ID == dl.EventID || ev.Data.ID == dl.SessionID {
				t.Errorf("the test event is in the feed: %+v", ev)
			}
		}
		waitFor(t, 5*time.Second, "the test delivery recorded as succeeded", func() bool {
			d, ok := e.delivery(dl.SessionID, dl.ID)
			return ok && d.Status == StatusSucceeded && len(d.Attempts) == 1
		})

		if _, err := e.d.Replay(e.ctx, dl.ID); err != nil {
			t.Fatalf("replay the test delivery: %v", err)
		}
		again := rv.waitN(dl.EventID, 2, 10*time.Second)[1]
		if string(again.body) != string(got.body) || again.attempt != 2 {
			t.Errorf("replay: attempt %d, body %s; want attempt 2 and the same body %s", again.attempt, again.body, got.body)
		}

		if _, err := e.d.TestEndpoint(e.ctx, "hooks", "session.unknown"); err == nil {
			t.Errorf("a test of an unknown event type was accepted")
		}
		if _, err := e.d.TestEndpoint(e.ctx, "nope", ""); err != ErrEndpointNotFound {
			t.Errorf("a test of an unknown endpoint: %v, want ErrEndpointNotFound", err)
		}
	})
}

// TestTasksSeeChangesMadeElsewhere: the replica that runs a test event's
// or a recovery's task has not polled the change that made them possible
// (a new endpoint, one enabled again): it looks at the current version
// instead of giving up.
func TestTasksSeeChangesMadeElsewhere(t *testing.T) {
	redistest.ForEachTopology(t, func(t *testing.T, tg redistest.Target) {
		rv := newReceiver(t)
		e := newEnv(t, tg, testConfig())  // e.d runs every task
		api := e.dispatcher(testConfig()) // takes the admin API's calls; never started
		for i := range 3 {
			ep, err := api.CreateEndpoint(e.ctx, EndpointSpec{URL: rv.url(), Events: []string{"session.created"}})
			if err != nil {
				t.Fatal(err)
			}
			dl, err := api.TestEndpoint(e.ctx, ep.ID, "")
			if err != nil {
				t.Fatal(err)
			}
			rv.waitN(dl.EventID, 1, 10*time.Second)
			waitFor(t, 5*time.Second, "test delivery "+strconv.Itoa(i)+" succeeded", func() bool {
				d, ok := e.delivery(dl.SessionID, dl.ID)
				return ok && d.Status == StatusSucceeded
			})
		}

		ep, err := api.CreateEndpoint(e.ctx, EndpointSpec{URL: rv.url(), Events: []string{"session.created"}})
		if err != nil {
			t.Fatal(err)
		}
		off, on := true, false
		if _, err := api.UpdateEndpoint(e.ctx, ep.ID, EndpointPatch{Disabled: &off}); err != nil {
			t.Fatal(err)
		}
		// e.d routes the next event without the endpoint: it polled.
		waitFor(t, 5*time.Second, "the runner to see the endpoint disabled", func() bool { return e.d.EndpointDisabled(ep.ID) })
		since := e.clock.Now().Add(-time.Second)
		id := e.create("elsewhere")
		e.waitRelayed(id)
		if _, err := api.UpdateEndpoint(e.ctx, ep.ID, EndpointPatch{Disabled: &on}); err != nil {
			t.Fatal(err)
		}
		rec, err := api.Recover(e.ctx, ep.ID, since, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "the recovery ended", func() bool {
			if rec, err = api.Recovery(e.ctx, rec.ID); err != nil {
				t.Fatal(err)
			}
			return rec.Status == RecoveryDone || rec.Status == RecoveryFailed
		})
		if rec.Status != RecoveryDone || rec.Scheduled != 1 || rec.Done != 1 {
			t.Fatalf("recovery %+v: want done with the one missed event", rec)
		}
		rv.waitN(e.event(id, "session.created").ID, 1, 5*time.Second)
	})
}
