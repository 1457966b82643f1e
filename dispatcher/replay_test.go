package dispatcher

import (
	"bytes"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/sessiond/sessiond/internal/redistest"
)

// A delivery that keeps failing is dead after the schedule, archived in
// Asynq and listed with every attempt; a replay sends it again with the
// same webhook-id and the next attempt number.
func TestDeadThenReplay(t *testing.T) {
	t.Parallel()
	redistest.ForEachTopology(t, testDeadThenReplay)
}

func testDeadThenReplay(t *testing.T, tg redistest.Target) {
	rv := newReceiver(t, testSecret)
	long := strings.Repeat("x", 10<<10)
	var failing atomic.Bool
	failing.Store(true)
	rv.setAnswer(func(w http.ResponseWriter, _ *http.Request, _ int) int {
		if failing.Load() {
			http.Error(w, long, http.StatusInternalServerError)
			return http.StatusInternalServerError
		}
		return answerJSON(w, http.StatusOK, map[string]bool{"ok": true})
	})
	cfg := testConfig(rv.endpoint("default"))
	cfg.RetrySchedule = []time.Duration{10 * time.Millisecond, 20 * time.Millisecond}
	e := newEnv(t, tg, cfg)
	sid := e.create("user-1")
	ev := e.events(sid)[0]
	did := deliveryID(sid, ev.ID, "default")

	e.waitStatus(sid, did, StatusDead, 3)
	// Archived in Asynq, in the queue of the session's shard, where the
	// UI shows it. The record is written just before Asynq archives the
	// task.
	waitFor(t, 5*time.Second, "the task archived", func() bool {
		info, err := e.task(sid, did)
		return err == nil && info.State == asynq.TaskStateArchived && info.Queue == e.queue(sid)
	})

	list, err := e.d.Deliveries(e.ctx, sid)
	if err != nil || len(list) != 1 {
		t.Fatalf("Deliveries = %+v, %v", list, err)
	}
	dl := list[0]
	if dl.ID != did || dl.Status != StatusDead || dl.EventID != ev.ID || dl.EventType != "session.created" || dl.EndpointID != "default" || dl.URL != rv.url() {
		t.Errorf("delivery = %+v", dl)
	}
	if len(dl.Attempts) != 3 {
		t.Fatalf("attempts = %d, want 3", len(dl.Attempts))
	}
	for i, a := range dl.Attempts {
		if a.Attempt != i+1 || a.StatusCode != 500 || a.Error != "HTTP 500 Internal Server Error" ||
			len(a.ResponseBody) != 4096 || !a.ResponseTruncated || a.LatencyMS <= 0 || a.At.IsZero() {
			t.Errorf("attempt %d = %+v (body %d bytes)", i, a, len(a.ResponseBody))
		}
	}

	// Replay: the delivery, then attempt 4 with the same webhook-id.
	failing.Store(false)
	replayed, err := e.d.Replay(e.ctx, did)
	if err != nil {
		t.Fatalf("Replay: %v", err)
	}
	if replayed.ID != did || len(replayed.Attempts) < 3 {
		t.Errorf("replay answer = %+v", replayed)
	}
	got := rv.waitN(ev.ID, 4, 10*time.Second)
	if got[3].attempt != 4 || got[3].v1Valid != 1 || got[3].id != ev.ID || !bytes.Equal(got[3].body, got[0].body) {
		t.Errorf("replay request: attempt %d, valid %d, id %s", got[3].attempt, got[3].v1Valid, got[3].id)
	}
	d := e.waitStatus(sid, did, StatusSucceeded, 4)
	// A success keeps no response body.
	if a := d.Attempts[3]; a.StatusCode != 200 || a.ResponseBody != "" || a.ResponseTruncated {
		t.Errorf("replay attempt = %+v", a)
	}
	if len(d.Attempts) != 4 {
		t.Errorf("%d attempts, want 4", len(d.Attempts))
	}
}

// Unknown sessions have no deliveries; unknown or malformed delivery ids
// are ErrDeliveryNotFound.
func TestUnknownDeliveries(t *testing.T) {
	t.Parallel()
	e := newEnv(t, redistest.Open(t, "single"), testConfig()) // no endpoints: no deliveries
	sid := e.create("user-1")
	for _, id := range []string{sid, "6f1c3a0e-9a8e-4c1e-8d5e-2a7c0b9d4e11", "nope!"} {
		if list, err := e.d.Deliveries(e.ctx, id); err != nil || list == nil || len(list) != 0 {
			t.Errorf("Deliveries(%q) = %+v, %v; want [] and no error", id, list, err)
		}
	}
	for _, id := range []string{"nope", sid + "~evt_00~default", sid + "~evt_00~de/fault", ""} {
		if _, err := e.d.Replay(e.ctx, id); !errors.Is(err, ErrDeliveryNotFound) {
			t.Errorf("Replay(%q) = %v, want ErrDeliveryNotFound", id, err)
		}
	}
}
