package lifecycle

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestRedactDue checks retention: a terminal session is redacted by
// Run(WorkRedact) once Retention has passed since its last change, not
// before, and an active one never.
func TestRedactDue(t *testing.T) {
	forEachTopology(t, func(t *testing.T, e *env) {
		c := e.createWith(CreateRequest{RefID: "ref", Person: json.RawMessage(`{"name":"R"}`)})
		active := e.createWith(CreateRequest{RefID: "ref2", Person: json.RawMessage(`{"name":"S"}`)})
		if _, err := e.svc.Progress(e.ctx, active.ID, StatusSubmitted); err != nil {
			t.Fatal(err)
		}
		canceled, err := e.svc.Cancel(e.ctx, c.ID)
		if err != nil {
			t.Fatal(err)
		}
		due := e.clock.Now().Add(testRetention)
		if at, ok := e.dueAt(WorkRedact, c.ID); !ok || !at.Equal(due) {
			t.Errorf("due:redact entry %v (%v), want %v", at, ok, due)
		}
		if _, ok := e.dueAt(WorkRedact, active.ID); ok {
			t.Errorf("an active session is due for redaction")
		}
		e.clock.Advance(testRetention - time.Millisecond)
		if ok, err := e.svc.Run(e.ctx, WorkRedact, c.ID); ok || err != nil {
			t.Errorf("redact before retention ends = %v, %v", ok, err)
		}
		if due := e.dueNow(WorkRedact); len(due) != 0 {
			t.Errorf("due redactions before retention ends: %v", due)
		}
		e.clock.Advance(time.Millisecond)
		if got := e.dueNow(WorkRedact); !slices.Equal(got, []string{c.ID}) {
			t.Errorf("due redactions %v, want %v", got, []string{c.ID})
		}
		if ok, err := e.svc.Run(e.ctx, WorkRedact, c.ID); !ok || err != nil {
			t.Errorf("redact when due = %v, %v", ok, err)
		}
		if ok, err := e.svc.Run(e.ctx, WorkRedact, c.ID); ok || err != nil {
			t.Errorf("redact again = %v, %v", ok, err)
		}
		if ok, err := e.svc.Run(e.ctx, WorkRedact, active.ID); ok || err != nil {
			t.Errorf("redact of an active session = %v, %v", ok, err)
		}
		if s := e.get(c.ID); s.Person != nil || s.RedactedAt == nil {
			t.Errorf("after retention: %+v", s)
		}
		// The redaction moved updated_at, not the start of the record's
		// retention: the record's purge stays where the cancel put it.
		if at, ok := e.dueAt(WorkPurge, c.ID); !ok || !at.Equal(canceled.UpdatedAt.Add(testRecordRetention-e.svc.Config().PurgeLead)) {
			t.Errorf("due:purge after the redaction %v (%v), want record retention after the cancel at %v", at, ok, canceled.UpdatedAt)
		}
		if s := e.get(active.ID); string(s.Person) != `{"name":"S"}` {
			t.Errorf("the active session lost its personal data: %+v", s)
		}
		if got := e.eventTypes(c.ID); !slices.Equal(got, []string{"session.created", "session.canceled", "session.redacted"}) {
			t.Errorf("events %v", got)
		}
		e.checkSession(c.ID)
		e.checkSession(active.ID)
	})
}

// TestPurge checks that Run(WorkPurge) removes every key of a deleted
// session once PurgeAfter has passed, and not before; that it leaves a
// session.purged outbox entry, which the feed hides; and that the
// session's events stay in the feed, reduced.
func TestPurge(t *testing.T) {
	forEachTopology(t, func(t *testing.T, e *env) {
		const ref, secret = "ref-Purgeable", "X-Person-Secret"
		c := e.createWith(CreateRequest{RefID: ref, Person: json.RawMessage(`{"name":"` + secret + `"}`), Metadata: json.RawMessage(`{"a":1}`)})
		if _, err := e.svc.Update(e.ctx, c.ID, UpdateRequest{Tags: &[]string{"tag-Purgeable"}}); err != nil {
			t.Fatal(err)
		}
		keep := e.create("keep")
		if err := e.svc.Delete(e.ctx, c.ID); err != nil {
			t.Fatal(err)
		}
		sh := e.shardOf(c.ID)
		if got, want := e.keys("*"+c.ID+"*"), []string{e.ks.EventDetails(sh, c.ID), e.ks.Session(sh, c.ID)}; !slices.Equal(got, want) {
			t.Errorf("keys of a deleted session: %v, want only %v until the purge", got, want)
		}
		if strings.Contains(e.contents(), secret) {
			t.Errorf("personal data left after the delete")
		}
		e.checkSession(c.ID)

		// The purge falls due PurgeLead before the TTL ends, so that it
		// still finds the record.
		lead := e.svc.Config().PurgeLead
		if lead <= 0 || lead > testPurgeAfter/2 {
			t.Fatalf("PurgeLead %v, want in (0, PurgeAfter/2]", lead)
		}
		if ttl := e.rdb.PTTL(e.ctx, e.ks.Session(sh, c.ID)).Val(); ttl <= testPurgeAfter-time.Minute || ttl > testPurgeAfter {
			t.Errorf("deleted record's PTTL %v, want about PurgeAfter (%v)", ttl, testPurgeAfter)
		}
		e.clock.Advance(testPurgeAfter - lead - time.Millisecond)
		if ok, err := e.svc.Run(e.ctx, WorkPurge, c.ID); ok || err != nil {
			t.Errorf("purge before PurgeAfter-PurgeLead = %v, %v", ok, err)
		}
		if e.record(c.ID) == nil {
			t.Fatal("purged early")
		}
		e.clock.Advance(time.Millisecond)
		if got := e.dueNow(WorkPurge); !slices.Equal(got, []string{c.ID}) {
			t.Errorf("due purges %v", got)
		}
		if ok, err := e.svc.Run(e.ctx, WorkPurge, c.ID); !ok || err != nil {
			t.Errorf("purge when due = %v, %v", ok, err)
		}
		if got := e.keys("*" + c.ID + "*"); len(got) != 0 {
			t.Errorf("keys left after purge: %v", got)
		}
		if got := e.keys("*" + ref + "*"); len(got) != 0 {
			t.Errorf("keys named after the ref_id left after purge: %v", got)
		}
		// Outside the outbox, nothing names the session, its ref_id or its
		// tags; in it, nothing but the id.
		for _, line := range strings.Split(e.contents(), "\n") {
			if strings.HasPrefix(line, e.ks.Outbox(sh)+" ") {
				continue
			}
			for _, s := range []string{c.ID, ref, "Purgeable", secret} {
				if strings.Contains(line, s) {
					t.Errorf("%q left after the purge: %s", s, line)
				}
			}
		}
		for _, s := range []string{ref, "Purgeable", secret} {
			if strings.Contains(e.outboxText(), s) {
				t.Errorf("%q in the outbox", s)
			}
		}

		// The outbox tells the dispatcher of the purge.
		rec := e.shardEvents(sh)
		last := rec[len(rec)-1]
		if last.Type != EventPurged || last.SessionID != c.ID || last.Status != StatusExpired || last.Sequence != 3 {
			t.Errorf("last outbox entry %+v, want session.purged of %s (expired, sequence 3)", last, c.ID)
		}
		// The feed hides it, and shows the session's events reduced.
		feed, err := e.svc.Events(e.ctx, "", 100)
		if err != nil {
			t.Fatal(err)
		}
		var types []string
		for _, ev := range feed.Events {
			if ev.Type == EventPurged {
				t.Errorf("the feed shows %s", EventPurged)
			}
			if ev.Data.ID != c.ID {
				continue
			}
			types = append(types, ev.Type)
			b, err := json.Marshal(ev.Data)
			if err != nil {
				t.Fatal(err)
			}
			want := `{"id":"` + c.ID + `","status":"` + string(ev.Data.Status) + `","sequence":` + jsonInt(ev.Data.Sequence) + `}`
			if string(b) != want {
				t.Errorf("purged session's event data %s, want %s", b, want)
			}
		}
		if want := []string{"session.created", "session.expired", "session.deleted"}; !slices.Equal(types, want) {
			t.Errorf("purged session's events in the feed: %v, want %v", types, want)
		}

		if ok, err := e.svc.Run(e.ctx, WorkPurge, c.ID); ok || err != nil {
			t.Errorf("purge again = %v, %v", ok, err)
		}
		e.checkSession(c.ID)
		e.checkSession(keep.ID)
		if s := e.get(keep.ID); s.ID != keep.ID {
			t.Errorf("neighbour lost: %+v", s)
		}
	})
}

func jsonInt(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// TestRecordRetention checks the two passes of retention: a terminal
// session's personal data is redacted Retention after its last change, its
// record purged RecordRetention after it; every key of the session carries
// a TTL that ends with its policy, relative to the injected clock.
func TestRecordRetention(t *testing.T) {
	forEachTopology(t, func(t *testing.T, e *env) {
		c := e.createWith(CreateRequest{RefID: "ref", Person: json.RawMessage(`{"name":"Kept"}`), Metadata: json.RawMessage(`{"m":1}`)})
		sh := e.shardOf(c.ID)
		e.clock.Advance(time.Minute)
		if _, err := e.svc.Cancel(e.ctx, c.ID); err != nil {
			t.Fatal(err)
		}
		last := e.clock.Now()
		// The TTLs run from the injected clock's now, whatever Redis's
		// clock says (the fake clock is years behind it).
		for _, k := range []struct {
			key  string
			want time.Duration
		}{
			{e.ks.Session(sh, c.ID), testRecordRetention},
			{e.ks.Personal(sh, c.ID), testRetention},
			{e.ks.EventDetails(sh, c.ID), e.svc.Config().EventsRetention},
		} {
			if ttl := e.rdb.PTTL(e.ctx, k.key).Val(); ttl <= k.want-time.Minute || ttl > k.want {
				t.Errorf("PTTL(%s) = %v, want about %v", k.key, ttl, k.want)
			}
		}
		if at, ok := e.dueAt(WorkRedact, c.ID); !ok || !at.Equal(last.Add(testRetention)) {
			t.Errorf("due:redact %v (%v), want %v", at, ok, last.Add(testRetention))
		}
		lead := e.svc.Config().PurgeLead
		purgeDue := last.Add(testRecordRetention - lead)
		if at, ok := e.dueAt(WorkPurge, c.ID); !ok || !at.Equal(purgeDue) {
			t.Errorf("due:purge %v (%v), want %v (PurgeLead before the TTL ends)", at, ok, purgeDue)
		}
		e.checkSession(c.ID)

		e.clock.Advance(testRetention)
		if ok, err := e.svc.Run(e.ctx, WorkPurge, c.ID); ok || err != nil {
			t.Errorf("purge at Retention = %v, %v; want not due", ok, err)
		}
		if ok, err := e.svc.Run(e.ctx, WorkRedact, c.ID); !ok || err != nil {
			t.Fatalf("redact at Retention = %v, %v", ok, err)
		}
		s := e.get(c.ID)
		if s.Person != nil || s.Metadata != nil || s.RedactedAt == nil || s.Status != StatusCanceled {
			t.Errorf("after Retention: %+v", s)
		}
		// The redaction does not restart the record's retention.
		if at, ok := e.dueAt(WorkPurge, c.ID); !ok || !at.Equal(purgeDue) {
			t.Errorf("due:purge after the redaction %v (%v), want %v", at, ok, purgeDue)
		}
		e.checkSession(c.ID)

		e.clock.Set(purgeDue.Add(-time.Millisecond))
		if ok, err := e.svc.Run(e.ctx, WorkPurge, c.ID); ok || err != nil {
			t.Errorf("purge before RecordRetention = %v, %v", ok, err)
		}
		e.clock.Advance(time.Millisecond)
		if ok, err := e.svc.Run(e.ctx, WorkPurge, c.ID); !ok || err != nil {
			t.Fatalf("purge at RecordRetention = %v, %v", ok, err)
		}
		if _, err := e.svc.Get(e.ctx, c.ID); err == nil {
			t.Errorf("Get after the record's purge succeeded")
		}
		if got := e.keys("*" + c.ID + "*"); len(got) != 0 {
			t.Errorf("keys left after the record's purge: %v", got)
		}
		if page := e.list(ListQuery{}); len(page.Sessions) != 0 {
			t.Errorf("List after the record's purge: %v", ids(page.Sessions))
		}
		types := e.eventTypes(c.ID)
		if want := []string{"session.created", "session.canceled", "session.redacted"}; !slices.Equal(types, want) {
			t.Errorf("events after the purge %v, want %v", types, want)
		}
		e.checkSession(c.ID)
	})
}

// TestDueIndexes checks the scheduler's path (run whatever the due
// indexes hold at now, earliest first) and that Run drops the entries of a
// session whose record is gone, but never those of one that exists.
func TestDueIndexes(t *testing.T) {
	forEachTopology(t, func(t *testing.T, e *env) {
		var sessions []string
		for i := range 4 {
			sessions = append(sessions, e.create("ref-"+string(rune('a'+i))).ID)
			e.clock.Advance(time.Minute)
		}
		e.clock.Set(testStart.Add(testSessionTTL - time.Millisecond))
		if got := e.dueNow(WorkExpire); len(got) != 0 {
			t.Errorf("due before the first deadline: %v", got)
		}
		e.clock.Advance(time.Millisecond)
		if got := e.dueNow(WorkExpire); !slices.Equal(got, sessions[:1]) {
			t.Errorf("due at the first deadline: %v, want %v", got, sessions[:1])
		}
		e.clock.Advance(time.Hour)
		if got := e.dueNow(WorkExpire); !slices.Equal(got, sessions) {
			t.Errorf("due later: %v, want %v (earliest first)", got, sessions)
		}
		for _, id := range e.dueNow(WorkExpire) {
			if ok, err := e.svc.Run(e.ctx, WorkExpire, id); !ok || err != nil {
				t.Errorf("Run(expire, %s) = %v, %v", id, ok, err)
			}
			if ok, err := e.svc.Run(e.ctx, WorkExpire, id); ok || err != nil {
				t.Errorf("Run(expire, %s) again = %v, %v", id, ok, err)
			}
		}
		if got := e.dueNow(WorkExpire); len(got) != 0 {
			t.Errorf("still due after running: %v", got)
		}
		for _, id := range sessions {
			e.checkSession(id)
		}
		if _, err := e.svc.Run(e.ctx, WorkKind("nope"), sessions[0]); err == nil {
			t.Error("Run(unknown kind) succeeded")
		}
		for _, kind := range WorkKinds {
			if ok, err := e.svc.Run(e.ctx, kind, "not-an-id"); ok || err != nil {
				t.Errorf("Run(%s, not an id) = %v, %v", kind, ok, err)
			}
		}

		// A record gone by its TTL: Run drops the stale entries.
		gone := e.create("gone")
		sh := e.shardOf(gone.ID)
		for _, kind := range WorkKinds {
			e.rdb.ZAdd(e.ctx, e.svc.DueKey(sh, kind), redis.Z{Score: 1, Member: gone.ID})
		}
		e.rdb.Del(e.ctx, e.ks.Session(sh, gone.ID))
		for _, kind := range WorkKinds {
			if ok, err := e.svc.Run(e.ctx, kind, gone.ID); ok || err != nil {
				t.Errorf("Run(%s) of a gone session = %v, %v", kind, ok, err)
			}
			if _, ok := e.dueAt(kind, gone.ID); ok {
				t.Errorf("Run(%s) left the gone session's due entry", kind)
			}
		}
		// A deleted session is gone from reads, not from Redis: its purge
		// entry stays.
		del := e.create("del")
		if err := e.svc.Delete(e.ctx, del.ID); err != nil {
			t.Fatal(err)
		}
		for _, kind := range []WorkKind{WorkExpire, WorkRedact} {
			if ok, err := e.svc.Run(e.ctx, kind, del.ID); ok || err != nil {
				t.Errorf("Run(%s) of a deleted session = %v, %v", kind, ok, err)
			}
		}
		e.checkSession(del.ID)

		// A purge entry claimed early (the scheduler's lease rescored it)
		// is put back at its time.
		e.rdb.ZAdd(e.ctx, e.svc.DueKey(e.shardOf(del.ID), WorkPurge), redis.Z{Score: 1, Member: del.ID})
		if ok, err := e.svc.Run(e.ctx, WorkPurge, del.ID); ok || err != nil {
			t.Errorf("Run(purge) before its time = %v, %v", ok, err)
		}
		e.checkSession(del.ID)
	})
}
