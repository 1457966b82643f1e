package scheduler

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sessiond/sessiond/lifecycle"
)

// noSweep turns the cron sweep off so a test sees one path only.
const noSweep = -1

func TestPollerExpiresOnTimeNeverEarly(t *testing.T) {
	e := newEnv(t)
	n := e.node(Config{SweepEvery: noSweep, PollInterval: 10 * time.Millisecond}, lifecycle.Config{SessionTTL: 10 * time.Minute}, true)
	polled := newSignal()
	n.sched.hooks.polled = func([]string) { polled.fire() }
	ran := newRanLog()
	n.sched.hooks.ran = ran.hook
	e.start(n)
	ctx := context.Background()

	created := create(t, n.svc, "ref-created", false)
	started := create(t, n.svc, "ref-started", false)
	if _, err := n.svc.Progress(ctx, started.ID, lifecycle.StatusStarted); err != nil {
		t.Fatal(err)
	}
	at := created.ExpiresAt.Time
	if !started.ExpiresAt.Time.Equal(at) {
		t.Fatalf("both sessions should share expires_at: %v vs %v", started.ExpiresAt, at)
	}

	e.clock.Set(at.Add(-time.Millisecond))
	polled.waitNext(t, 3, "three polls 1 ms before expires_at")
	if got := e.events("session.expired"); len(got) != 0 {
		t.Fatalf("expired 1 ms early: %v", got)
	}
	for _, id := range []string{created.ID, started.ID} {
		s, err := n.svc.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if !s.Status.Pending() {
			t.Fatalf("session %s is %s 1 ms before expires_at", id, s.Status)
		}
	}

	e.clock.Set(at)
	tests := []struct {
		id    string
		event string
	}{
		{created.ID, "session.expired"},
		{started.ID, "session.abandoned"},
	}
	for _, tt := range tests {
		evs := e.waitEvents(tt.event, 1)[tt.id]
		if len(evs) != 1 {
			t.Fatalf("%s: got %d %s events, want 1", tt.id, len(evs), tt.event)
		}
		if ts := evs[0].Timestamp.Time; ts.Before(at) {
			t.Errorf("%s: %s at %v, before expires_at %v", tt.id, tt.event, ts, at)
		}
		ran.waitSources(t, tt.id, "poller/expire")
	}
}

func TestPollerClaimsAreExclusive(t *testing.T) {
	e := newEnv(t)
	const sessions = 400
	cfg := Config{SweepEvery: noSweep, PollInterval: 5 * time.Millisecond, Concurrency: 8}
	var mu sync.Mutex
	claims := map[string]int{}
	perNode := make([]int, 2)
	ran := newRanLog()
	var nodes []*node
	for i := range 2 {
		n := e.node(cfg, lifecycle.Config{SessionTTL: time.Minute}, true)
		n.sched.hooks.polled = func(ids []string) {
			mu.Lock()
			defer mu.Unlock()
			for _, id := range ids {
				claims[id]++
			}
			perNode[i] += len(ids)
		}
		n.sched.hooks.ran = ran.hook
		nodes = append(nodes, n)
	}
	ids := make([]string, sessions)
	for i := range ids {
		ids[i] = create(t, nodes[i%2].svc, fmt.Sprintf("ref-%d", i), false).ID
	}
	for _, n := range nodes {
		e.start(n)
	}
	e.clock.Advance(time.Minute)

	expired := e.waitEvents("session.expired", sessions)
	waitFor(t, 10*time.Second, "every Run's hook", func() bool { return ran.count() >= sessions })
	mu.Lock()
	defer mu.Unlock()
	for _, id := range ids {
		if got := len(expired[id]); got != 1 {
			t.Errorf("session %s: %d expired events, want 1", id, got)
		}
		if got := claims[id]; got != 1 {
			t.Errorf("session %s claimed %d times, want 1", id, got)
		}
		if got := ran.sources(id); got != "poller/expire" {
			t.Errorf("session %s changed by %q, want one poller/expire", id, got)
		}
	}
	t.Logf("claims per scheduler: %v", perNode)
}

func TestCrashedClaimComesDueAfterLease(t *testing.T) {
	e := newEnv(t)
	const lease = 30 * time.Second
	cfg := Config{SweepEvery: noSweep, PollInterval: 5 * time.Millisecond, Lease: lease}
	// No Timer: the task is lost too, only the due index remains.
	live := e.node(cfg, lifecycle.Config{SessionTTL: time.Minute}, false)
	polled := newSignal()
	live.sched.hooks.polled = func([]string) { polled.fire() }
	ran := newRanLog()
	live.sched.hooks.ran = ran.hook
	dead := e.node(cfg, lifecycle.Config{SessionTTL: time.Minute}, false)

	s := create(t, live.svc, "ref-crash", false)
	e.clock.Advance(time.Minute)
	c, err := dead.sched.claim(context.Background(), lifecycle.WorkExpire, e.clock.Now(), 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.ids) != 1 || c.ids[0] != s.ID {
		t.Fatalf("dead claimer got %v, want [%s]", c.ids, s.ID)
	}
	// The dead replica never runs it. The live one must leave it alone
	// while the lease holds...
	e.start(live)
	e.clock.Advance(lease - time.Millisecond)
	polled.waitNext(t, 3, "three polls inside the lease")
	if got := e.events("session.expired"); len(got) != 0 {
		t.Fatalf("claimed session expired inside the lease: %v", got)
	}
	// ...and take it when the lease ends.
	e.clock.Advance(time.Millisecond)
	if evs := e.waitEvents("session.expired", 1)[s.ID]; len(evs) != 1 {
		t.Fatalf("got %d expired events, want 1", len(evs))
	}
	ran.waitSources(t, s.ID, "poller/expire")
}

func TestExtensionAndResumeRearmExpiry(t *testing.T) {
	e := newEnv(t)
	const ttl = 10 * time.Minute
	n := e.node(Config{SweepEvery: noSweep, PollInterval: 5 * time.Millisecond}, lifecycle.Config{SessionTTL: ttl}, true)
	polled := newSignal()
	n.sched.hooks.polled = func([]string) { polled.fire() }
	e.start(n)
	ctx := context.Background()

	s := create(t, n.svc, "ref-extend", false)
	moved := create(t, n.svc, "ref-moved-on", false)
	for _, to := range []lifecycle.Status{lifecycle.StatusStarted, lifecycle.StatusSubmitted} {
		if _, err := n.svc.Progress(ctx, moved.ID, to); err != nil {
			t.Fatal(err)
		}
	}
	first := s.ExpiresAt.Time
	e.clock.Advance(ttl / 2)
	again := create(t, n.svc, "ref-extend", false) // idempotent create extends
	if again.ID != s.ID || !again.ExpiresAt.After(first) {
		t.Fatalf("idempotent create: got %s until %v, want %s extended past %v", again.ID, again.ExpiresAt, s.ID, first)
	}
	// The extension has a task of its own (version 2).
	if _, err := n.sched.inspector.GetTaskInfo(QueueExpiry, workTaskID(lifecycle.WorkExpire, s.ID, 2)); err != nil {
		t.Errorf("no task for the extension: %v", err)
	}

	e.clock.Set(first)
	polled.waitNext(t, 3, "three polls at the old expires_at")
	if got := e.events("session.expired"); len(got) != 0 {
		t.Fatalf("expired at the old time: %v", got)
	}

	e.clock.Set(again.ExpiresAt.Time)
	e.waitEvents("session.expired", 1)
	resumed, err := n.svc.Resume(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Set(resumed.ExpiresAt.Time)
	waitFor(t, 10*time.Second, "second expiry after resume", func() bool {
		return len(e.events("session.expired")[s.ID]) == 2
	})
	polled.waitNext(t, 3, "three more polls")
	if got := len(e.events("session.expired")[s.ID]); got != 2 {
		t.Errorf("got %d expired events, want 2 (one per time limit)", got)
	}
	if got := e.events("session.expired")[moved.ID]; len(got) != 0 {
		t.Errorf("a submitted session expired: %v", got)
	}
	m, err := n.svc.Get(ctx, moved.ID)
	if err != nil {
		t.Fatal(err)
	}
	if m.Status != lifecycle.StatusSubmitted {
		t.Errorf("moved-on session is %s, want submitted", m.Status)
	}
}
