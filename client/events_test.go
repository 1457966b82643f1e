package client

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/sessiond/sessiond/client/clienttest"
)

// feedStep is one answer of a scripted events feed.
type feedStep struct {
	wantAfter string
	events    []string // event ids; each event's cursor is its id
	next      string
}

// scriptedFeed answers GET /v1/events with steps in turn, the last one
// again after that, and fails the test when a request's after is not the
// step's.
func scriptedFeed(t *testing.T, steps []feedStep) http.Handler {
	var mu sync.Mutex
	i := 0
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		st := steps[min(i, len(steps)-1)]
		i++
		mu.Unlock()
		if got := r.URL.Query().Get("after"); got != st.wantAfter {
			t.Errorf("request %d: after = %q, want %q", i, got, st.wantAfter)
		}
		events := []map[string]any{}
		for _, id := range st.events {
			events = append(events, map[string]any{"id": id, "cursor": id, "type": "session.created",
				"timestamp": "2026-01-02T03:04:05.678Z", "data": map[string]any{"id": "s1", "sequence": 1}})
		}
		clienttest.WriteJSON(w, 200, map[string]any{"events": events, "next_cursor": st.next})
	})
}

func TestFollowEvents(t *testing.T) {
	t.Parallel()
	srv := clienttest.NewServer(t, clienttest.Config{}, scriptedFeed(t, []feedStep{
		{"c0", nil, "c0"},
		{"c0", nil, "c0"},
		{"c0", []string{"e1", "e2"}, "e2"},
		{"e2", []string{"e3"}, "e3"},
		{"e3", nil, "e3"},
		{"e3", nil, "e3"},
		{"e3", nil, "e3"},
		{"e3", nil, "e3"},
	}))
	c, err := New(srv.URL, clienttest.Key, clienttest.Secret)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var waits []time.Duration
	c.sleep = func(ctx context.Context, d time.Duration) error {
		if waits = append(waits, d); len(waits) == 6 {
			cancel()
		}
		return ctx.Err()
	}
	var got []string
	err = c.FollowEvents(ctx, FollowOptions{After: "c0", Limit: 2, MinInterval: time.Second, MaxInterval: 4 * time.Second},
		func(e Event) error {
			got = append(got, e.ID)
			return nil
		})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if want := []string{"e1", "e2", "e3"}; !reflect.DeepEqual(got, want) {
		t.Errorf("events = %v, want %v", got, want)
	}
	// Empty polls back off from 1s to 4s; events reset the wait and are
	// followed by the next poll at once.
	if want := []time.Duration{time.Second, 2 * time.Second, time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second}; !reflect.DeepEqual(waits, want) {
		t.Errorf("waits = %v, want %v", waits, want)
	}
	for _, r := range srv.Requests() {
		if q := r.Target; q[len(q)-len("limit=2"):] != "limit=2" {
			t.Errorf("target %s lacks limit=2", q)
		}
	}
}

func TestFollowEventsStops(t *testing.T) {
	t.Parallel()
	t.Run("on the callback's error", func(t *testing.T) {
		t.Parallel()
		srv := clienttest.NewServer(t, clienttest.Config{}, scriptedFeed(t, []feedStep{{"", []string{"e1", "e2"}, "e2"}}))
		c, _ := testClient(t, srv)
		stop := errors.New("stop")
		var got []string
		err := c.FollowEvents(t.Context(), FollowOptions{}, func(e Event) error {
			got = append(got, e.ID)
			return stop
		})
		if err != stop || len(got) != 1 {
			t.Errorf("err = %v after %v, want stop after e1", err, got)
		}
	})
	t.Run("on an error answer", func(t *testing.T) {
		t.Parallel()
		srv := clienttest.NewServer(t, clienttest.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			clienttest.WriteError(w, 400, 1001, "Invalid cursor.")
		}))
		c, _ := testClient(t, srv)
		err := c.FollowEvents(t.Context(), FollowOptions{After: "bad"}, func(Event) error { return nil })
		if ErrorCode(err) != CodeInvalidRequest {
			t.Errorf("err = %v, want the 400", err)
		}
	})
}

func TestEventKeepsItsText(t *testing.T) {
	t.Parallel()
	raw := `{"id":"e1","cursor":"1-0","type":"session.created","timestamp":"2026-01-02T03:04:05.600Z","data":{"id":"s1","sequence":1},"extra":true}`
	var p EventPage
	if err := json.Unmarshal([]byte(`{"events":[`+raw+`],"next_cursor":"1-0"}`), &p); err != nil {
		t.Fatal(err)
	}
	if got := string(p.Events[0].Raw); got != raw {
		t.Errorf("Raw = %s, want %s", got, raw)
	}
	if p.Events[0].ID != "e1" || p.Events[0].Timestamp.Nanosecond() != 600e6 {
		t.Errorf("event = %+v", p.Events[0])
	}
	if err := json.Unmarshal([]byte(`{"events":[{"id":1}]}`), &p); err == nil {
		t.Error("a malformed event decoded")
	}
}
