package dispatcher

import (
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/internal/redistest"
	"github.com/sessiond/sessiond/lifecycle"
)

// record.lua keeps a delivery's summary and attempts in one field of the
// session's deliveries hash, acknowledges the outbox entry with the entry's
// last delivery, caps the attempts kept, and writes nothing for a purged
// session (but still acknowledges). The recorder's group commit carries
// concurrent writes.
func TestRecordScript(t *testing.T) {
	t.Parallel()
	redistest.ForEachTopology(t, func(t *testing.T, tg redistest.Target) {
		cfg := testConfig(Endpoint{ID: "default", URL: "http://127.0.0.1:1/", Secrets: []string{testSecret}})
		cfg.Retention = time.Hour
		const purgeAfter = time.Hour
		e := bareEnv(t, tg, cfg, func(c *lifecycle.Config) { c.PurgeAfter = purgeAfter })
		e.groupFor("user-1")
		sid := e.create("user-1")
		e.deadRead("user-1")
		ev := e.events(sid)[0]
		sh := ev.Shard
		dkey := e.keys.Deliveries(sh, sid)
		field := recordField(ev.ID, "default")
		w := func(status string, n, code int, body, ack string) *write {
			return &write{
				shard: sh, sessionID: sid, eventID: ev.ID, endpointID: "default", cursor: ev.Cursor, eventType: ev.Type, status: status, ack: ack,
				attempt: &Attempt{Attempt: n, At: lifecycle.At(time.Now()), StatusCode: code, LatencyMS: 1.5, ResponseBody: body},
			}
		}

		if err := e.d.store.record(e.ctx, w(StatusFailed, 1, 500, "oops", "")); err != nil {
			t.Fatal(err)
		}
		if n := e.pending(sh); n != 1 {
			t.Errorf("a record without ack acknowledged the entry (%d pending)", n)
		}
		if err := e.d.store.record(e.ctx, w(StatusSucceeded, 2, 200, "fine", ev.Cursor)); err != nil {
			t.Fatal(err)
		}
		if n := e.pending(sh); n != 0 {
			t.Errorf("the entry's last record did not acknowledge it (%d pending)", n)
		}
		raw := e.rdb.HGet(e.ctx, dkey, field).Val()
		lines := strings.Split(raw, "\n")
		if len(lines) != 3 {
			t.Fatalf("record %q: want a summary and 2 attempts", raw)
		}
		var sum map[string]any
		if err := json.Unmarshal([]byte(lines[0]), &sum); err != nil {
			t.Fatal(err)
		}
		if sum["s"] != StatusSucceeded || sum["t"] != "session.created" || sum["c"] != ev.Cursor || sum["n"] != 2.0 {
			t.Errorf("summary = %v", sum)
		}
		if !strings.Contains(lines[1], `"b":"oops"`) || strings.Contains(lines[2], "fine") {
			t.Errorf("attempts %q, %q: want the failure's answer kept and the success's not", lines[1], lines[2])
		}
		if ttl := e.rdb.PTTL(e.ctx, dkey).Val(); ttl <= 0 || ttl > cfg.Retention {
			t.Errorf("deliveries hash TTL %v, want up to %v", ttl, cfg.Retention)
		}
		d, ok := e.delivery(sid, deliveryID(sid, ev.ID, "default"))
		if !ok || d.Status != StatusSucceeded || len(d.Attempts) != 2 || d.Attempts[0].ResponseBody != "oops" || d.Attempts[1].StatusCode != 200 {
			t.Errorf("delivery = %+v", d)
		}

		// Group commit: concurrent writes share round trips and all land;
		// a record keeps at most maxAttemptsKept attempts.
		go e.d.rec.run()
		var wg sync.WaitGroup
		errs := make(chan error, 2*maxAttemptsKept)
		for i := range 2 * maxAttemptsKept {
			wg.Go(func() { errs <- e.d.rec.write(e.ctx, w(StatusFailed, 3+i, 503, "", "")) })
		}
		wg.Wait()
		e.d.rec.close()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if lines := strings.Split(e.rdb.HGet(e.ctx, dkey, field).Val(), "\n"); len(lines) != 1+maxAttemptsKept {
			t.Errorf("record has %d attempts, want %d", len(lines)-1, maxAttemptsKept)
		}
		// A handler that outlives the shutdown gets an error, not a panic,
		// and writes nothing.
		kept := e.rdb.HGet(e.ctx, dkey, field).Val()
		if err := e.d.rec.write(e.ctx, w(StatusFailed, 99, 503, "late", "")); !errors.Is(err, errRecorderClosed) {
			t.Errorf("write after close = %v, want errRecorderClosed", err)
		}
		e.d.rec.close() // twice is fine
		if after := e.rdb.HGet(e.ctx, dkey, field).Val(); after != kept {
			t.Errorf("a write after close changed the record")
		}

		// Purged: nothing is written, the entry is still acknowledged.
		if err := e.svc.Delete(e.ctx, sid); err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(purgeAfter + time.Second)
		if ok, err := e.svc.Run(e.ctx, lifecycle.WorkPurge, sid); err != nil || !ok {
			t.Fatalf("purge: %v %v", ok, err)
		}
		e.deadRead("user-1")
		purged := e.event(sid, lifecycle.EventPurged)
		before := e.rdb.HGetAll(e.ctx, dkey).Val()
		late := w(StatusSucceeded, 1, http.StatusOK, "", purged.Cursor)
		late.eventID = purged.ID
		if err := e.d.store.record(e.ctx, late); err != nil {
			t.Fatal(err)
		}
		if after := e.rdb.HGetAll(e.ctx, dkey).Val(); !maps.Equal(before, after) {
			t.Errorf("a record was written for a purged session: %d fields, had %d", len(after), len(before))
		}
		left, err := e.rdb.XPendingExt(e.ctx, &redis.XPendingExtArgs{Stream: e.keys.Outbox(sh), Group: relayGroup, Start: purged.Cursor, End: purged.Cursor, Count: 1}).Result()
		if err != nil || len(left) != 0 {
			t.Errorf("the entry is still pending (%v, %v): a purged session's record must still acknowledge", left, err)
		}
	})
}

// The maintenance loop runs often enough for the in-flight refresh to keep
// entries well under ClaimIdle.
func TestMaintainPeriod(t *testing.T) {
	for _, tt := range []struct{ claimIdle, want time.Duration }{
		{5 * time.Second, time.Second},
		{4 * time.Second, time.Second},
		{2 * time.Second, 500 * time.Millisecond},
		{400 * time.Millisecond, 100 * time.Millisecond},
	} {
		if got := maintainPeriod(tt.claimIdle); got != tt.want {
			t.Errorf("maintainPeriod(%v) = %v, want %v", tt.claimIdle, got, tt.want)
		}
	}
	c := Config{ClaimIdle: time.Millisecond}
	c.setDefaults()
	if c.ClaimIdle != minClaimIdle {
		t.Errorf("ClaimIdle 1ms became %v, want %v", c.ClaimIdle, minClaimIdle)
	}
}
