package lifecycle

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sessiond/sessiond/internal/keyspace"
)

// nextMillisecond waits until Redis's clock has passed the millisecond of
// the last outbox entry, so that the next commit is later by commit time
// (the feed orders by it across shards, to the millisecond).
func (e *env) nextMillisecond() {
	e.t.Helper()
	var last streamID
	for _, ev := range e.allEvents() {
		id, _ := parseStreamID(ev.Cursor)
		if id.compare(last) > 0 {
			last = id
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		now, err := e.rdb.Time(e.ctx).Result()
		if err != nil {
			e.t.Fatal(err)
		}
		if uint64(now.UnixMilli()) > last.ms {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("Redis's clock stays at %d ms", now.UnixMilli())
		}
	}
}

// feedAll reads the whole feed after cursor in pages of limit, checking
// that each page's next_cursor continues it.
func (e *env) feedAll(after string, limit int) ([]FeedEvent, string) {
	e.t.Helper()
	var out []FeedEvent
	for pages := 0; ; pages++ {
		if pages > 100 {
			e.t.Fatal("the feed does not end")
		}
		f, err := e.svc.Events(e.ctx, after, limit)
		if err != nil {
			e.t.Fatalf("Events(%q, %d): %v", after, limit, err)
		}
		if len(f.Events) > limit {
			e.t.Fatalf("page of %d events, limit %d", len(f.Events), limit)
		}
		out = append(out, f.Events...)
		if f.NextCursor == after {
			return out, after
		}
		after = f.NextCursor
	}
}

func feedKeys(evs []FeedEvent) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.Data.ID[:8] + ":" + ev.Type + ":" + jsonInt(ev.Data.Sequence)
	}
	return out
}

// TestEventsFeed checks the events feed: every event once, merged from the
// shards in commit order, each with its data; an opaque cursor that
// continues exactly where a page, or an event, ended; and bad cursors
// refused.
func TestEventsFeed(t *testing.T) {
	forEachTopology(t, func(t *testing.T, e *env) {
		// Refs in shards of decreasing number, so that commit order and
		// shard order disagree.
		var refs []string
		for i := 0; len(refs) < 4; i++ {
			ref := "feed-" + jsonInt(int64(i))
			if len(refs) == 0 || ShardOfRef(ref) < ShardOfRef(refs[len(refs)-1]) {
				refs = append(refs, ref)
			}
		}
		var want []string
		committed := func(id, typ string, seq int) {
			want = append(want, id[:8]+":"+typ+":"+jsonInt(int64(seq)))
			e.nextMillisecond()
		}
		var sessions []*Created
		for _, ref := range refs {
			c := e.createWith(CreateRequest{RefID: ref, FlowID: "flow"})
			sessions = append(sessions, c)
			committed(c.ID, "session.created", 1)
		}
		for i := len(sessions) - 1; i >= 0; i-- {
			c := sessions[i]
			e.clock.Advance(time.Second)
			if _, err := e.svc.Update(e.ctx, c.ID, UpdateRequest{Tags: &[]string{"t" + jsonInt(int64(i))}}); err != nil {
				t.Fatal(err)
			}
			if _, err := e.svc.Progress(e.ctx, c.ID, StatusSubmitted); err != nil {
				t.Fatal(err)
			}
			committed(c.ID, "session.submitted", 2)
		}
		if _, err := e.svc.Decide(e.ctx, sessions[1].ID, DecisionRequest{Status: StatusApproved, Reason: "ok"}); err != nil {
			t.Fatal(err)
		}
		committed(sessions[1].ID, "session.approved", 3)

		full, end := e.feedAll("", 100)
		if got := feedKeys(full); !slices.Equal(got, want) {
			t.Fatalf("feed\n got %v\nwant %v", got, want)
		}
		for _, limit := range []int{1, 2, 3} {
			paged, _ := e.feedAll("", limit)
			if got := feedKeys(paged); !slices.Equal(got, want) {
				t.Errorf("feed in pages of %d\n got %v\nwant %v", limit, got, want)
			}
		}
		// Each event's cursor continues right after it.
		for i, ev := range full {
			f, err := e.svc.Events(e.ctx, ev.Cursor, 100)
			if err != nil {
				t.Fatal(err)
			}
			if got := feedKeys(f.Events); !slices.Equal(got, want[i+1:]) {
				t.Errorf("after event %d: %v, want %v", i, got, want[i+1:])
			}
		}
		if f, err := e.svc.Events(e.ctx, "", 0); err != nil || len(f.Events) != len(want) {
			t.Errorf("limit 0 (default): %d events, %v", len(f.Events), err)
		}

		// The data of each event, as the session was then.
		approved := full[len(full)-1]
		if d := approved.Data; d.ID != sessions[1].ID || d.RefID != refs[1] || d.FlowID != "flow" || d.Status != StatusApproved ||
			d.Decision == nil || d.Decision.Reason != "ok" || d.Tags == nil || !slices.Equal(*d.Tags, []string{"t1"}) || d.Sequence != 3 {
			t.Errorf("approved event data %+v", d)
		}
		if !approved.Timestamp.Equal(e.clock.Now()) || !strings.HasPrefix(approved.ID, "evt_") {
			t.Errorf("approved event %s at %v, want at %v", approved.ID, approved.Timestamp, e.clock.Now())
		}
		if d := full[0].Data; d.Status != StatusCreated || d.Tags == nil || len(*d.Tags) != 0 || d.ExpiresAt == nil {
			t.Errorf("created event data %+v", d)
		}

		// The cursor is opaque: it names no session, stream entry or key.
		for _, ev := range full {
			if _, err := base64.RawURLEncoding.DecodeString(ev.Cursor); err != nil {
				t.Errorf("cursor %q is not base64url", ev.Cursor)
			}
			for _, c := range sessions {
				if strings.Contains(ev.Cursor, c.ID) || strings.Contains(ev.Cursor, c.ID[:8]) {
					t.Errorf("cursor %q names a session", ev.Cursor)
				}
			}
		}

		// Nothing new: the cursor stays. Something new: exactly it.
		if f, err := e.svc.Events(e.ctx, end, 10); err != nil || len(f.Events) != 0 || f.NextCursor != end {
			t.Errorf("after the end: %d events, cursor moved %v, %v", len(f.Events), f.NextCursor != end, err)
		}
		d := e.create("feed-late")
		if f, err := e.svc.Events(e.ctx, end, 10); err != nil || !slices.Equal(feedKeys(f.Events), []string{d.ID[:8] + ":session.created:1"}) {
			t.Errorf("after the end, one new event: %v, %v", feedKeys(f.Events), err)
		}

		var ve *ValidationError
		long := strings.Repeat("A", 4*keyspace.Shards*20+4)
		for _, bad := range []string{"nope", "!!", "AAAA", end + "AA", long, base64.StdEncoding.EncodeToString([]byte{0xff, 0xff})} {
			if _, err := e.svc.Events(e.ctx, bad, 10); !errors.As(err, &ve) {
				t.Errorf("Events(%q): %v, want a ValidationError", bad, err)
			}
		}
	})
}

// TestFeedPosition checks the cursor's encoding round-trips.
func TestFeedPosition(t *testing.T) {
	t.Parallel()
	var p feedPosition
	for i := range p {
		p[i] = streamID{uint64(1700000000000 + i*i*1000), uint64(i % 3)}
	}
	p[5] = streamID{}
	got, err := decodeFeedPosition(p.encode())
	if err != nil || got != p {
		t.Errorf("decode(encode(%v)) = %v, %v", p, got, err)
	}
	if got, err := decodeFeedPosition(""); err != nil || got != (feedPosition{}) {
		t.Errorf(`decode("") = %v, %v; want the start`, got, err)
	}
}

// TestWebhookBody checks the webhook body an event makes.
func TestWebhookBody(t *testing.T) {
	forEachTopology(t, func(t *testing.T, e *env) {
		c := e.createWith(CreateRequest{RefID: "hook", Person: json.RawMessage(`{"name":"Never-In-A-Webhook"}`), Metadata: json.RawMessage(`{"m":"Nor-This"}`)})
		evs := e.events(c.ID)
		data, full, err := e.svc.EventDetails(e.ctx, evs)
		if err != nil || !full[0] {
			t.Fatalf("EventDetails: %v, full %v", err, full)
		}
		body, err := evs[0].WebhookBody(data[0])
		if err != nil {
			t.Fatal(err)
		}
		var got map[string]any
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatal(err)
		}
		if got["type"] != "session.created" || got["timestamp"] != "2024-03-01T12:00:00.000Z" {
			t.Errorf("body %s", body)
		}
		d, _ := got["data"].(map[string]any)
		if d["id"] != c.ID || d["ref_id"] != "hook" || d["status"] != "created" || d["sequence"] != 1.0 {
			t.Errorf("body data %v", d)
		}
		for _, s := range []string{"Never-In-A-Webhook", "Nor-This", c.Token, `"person"`, `"metadata"`} {
			if strings.Contains(string(body), s) {
				t.Errorf("webhook body holds %q: %s", s, body)
			}
		}
	})
}

// TestEventDataMatchesSession checks that each event's data, put together
// from the outbox and the compact details hash, is the session as that
// event left it (the fields the session's JSON has, dates to the
// millisecond), and that a created session's details stay small enough
// for Redis's compact hash encoding.
func TestEventDataMatchesSession(t *testing.T) {
	forEachTopology(t, func(t *testing.T, e *env) {
		c := e.createWith(CreateRequest{RefID: "data-ref", FlowID: "kyc-basic"})
		sh := e.shardOf(c.ID)
		for f, v := range e.rdb.HGetAll(e.ctx, e.ks.EventDetails(sh, c.ID)).Val() {
			if len(f) > 64 || len(v) > 64 {
				t.Errorf("details field %q = %q (%d bytes): over the 64 of a compact hash", f, v, len(v))
			}
		}
		code := 42
		snapshots := []*Session{&c.Session}
		steps := []func() (*Session, error){
			func() (*Session, error) {
				return e.svc.Update(e.ctx, c.ID, UpdateRequest{Tags: &[]string{"vip", "eu"}})
			},
			func() (*Session, error) { return e.svc.Progress(e.ctx, c.ID, StatusStarted) },
			func() (*Session, error) { return e.svc.Progress(e.ctx, c.ID, StatusSubmitted) },
			func() (*Session, error) {
				return e.svc.Decide(e.ctx, c.ID, DecisionRequest{Status: StatusDeclined, Reason: "document expired", ReasonCode: &code})
			},
		}
		for _, step := range steps {
			e.clock.Advance(1234 * time.Millisecond)
			s, err := step()
			if err != nil {
				t.Fatal(err)
			}
			snapshots = append(snapshots, s)
		}
		evs := e.events(c.ID)
		data, full, err := e.svc.EventDetails(e.ctx, evs)
		if err != nil {
			t.Fatal(err)
		}
		// Each event here moves to a new status: the first snapshot in
		// a status is what its event left (the update makes none).
		byStatus := map[Status]*Session{}
		for _, s := range snapshots {
			if byStatus[s.Status] == nil {
				byStatus[s.Status] = s
			}
		}
		if len(evs) != 4 {
			t.Fatalf("%d events, want 4", len(evs))
		}
		for i, ev := range evs {
			if !full[i] {
				t.Fatalf("event %s: details missing", ev.Type)
			}
			want := byStatus[data[i].Status]
			got, _ := json.Marshal(data[i])
			var g, w map[string]any
			json.Unmarshal(got, &g)
			wb, _ := json.Marshal(want)
			json.Unmarshal(wb, &w)
			for _, k := range []string{"id", "ref_id", "flow_id", "status", "created_at", "updated_at", "expires_at", "tags", "decision"} {
				if fmt.Sprint(g[k]) != fmt.Sprint(w[k]) {
					t.Errorf("%s (seq %d): %s = %v, the session had %v", ev.Type, data[i].Sequence, k, g[k], w[k])
				}
			}
		}
	})
}
