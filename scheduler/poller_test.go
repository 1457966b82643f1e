package scheduler

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sessiond/sessiond/internal/keyspace"
	"github.com/sessiond/sessiond/lifecycle"
)

func TestPollerExpiresOnTimeNeverEarly(t *testing.T) {
	forEachTopology(t, func(t *testing.T, e *env) {
		n := e.node(Config{SweepEvery: noSweep, PollInterval: 10 * time.Millisecond}, lifecycle.Config{SessionTTL: 10 * time.Minute})
		polled := newSignal()
		n.sched.hooks.polled = func([]string) { polled.fire() }
		ran := newRanLog()
		n.sched.hooks.ran = ran.hook
		e.start(n)

		// One pending session in every shard, created or started; all
		// share one expires_at since the clock does not move.
		type pending struct {
			id, event string
		}
		var sessions []pending
		var at time.Time
		for sh, refs := range refsInShards("ref-due", 1) {
			c := create(t, n.svc, refs[0], false)
			if at.IsZero() {
				at = c.ExpiresAt.Time
			} else if !c.ExpiresAt.Equal(at) {
				t.Fatalf("sessions should share expires_at: %v vs %v", c.ExpiresAt, at)
			}
			p := pending{c.ID, "session.expired"}
			if sh%2 == 1 {
				if _, err := n.svc.Progress(e.ctx, c.ID, lifecycle.StatusStarted); err != nil {
					t.Fatal(err)
				}
				p.event = "session.abandoned"
			}
			sessions = append(sessions, p)
		}

		e.clock.Set(at.Add(-time.Millisecond))
		polled.waitNext(t, 3, "three polls 1 ms before expires_at")
		for _, typ := range []string{"session.expired", "session.abandoned"} {
			if got := e.events(typ); len(got) != 0 {
				t.Fatalf("%d sessions %s 1 ms early", len(got), typ)
			}
		}
		for _, p := range sessions {
			s, err := n.svc.Get(e.ctx, p.id)
			if err != nil {
				t.Fatal(err)
			}
			if !s.Status.Pending() {
				t.Fatalf("session %s is %s 1 ms before expires_at", p.id, s.Status)
			}
		}

		e.clock.Set(at)
		for _, p := range sessions {
			evs := e.waitEvents(p.event, keyspace.Shards/2)[p.id]
			if len(evs) != 1 {
				t.Fatalf("%s: got %d %s events, want 1", p.id, len(evs), p.event)
			}
			if ts := evs[0].Timestamp.Time; ts.Before(at) {
				t.Errorf("%s: %s at %v, before expires_at %v", p.id, p.event, ts, at)
			}
			ran.waitSources(t, p.id, "poller/expire")
		}
	})
}

func TestPollerClaimsAreExclusive(t *testing.T) {
	forEachTopology(t, func(t *testing.T, e *env) {
		const sessions = 300
		cfg := Config{SweepEvery: noSweep, PollInterval: 5 * time.Millisecond, Concurrency: 8}
		var mu sync.Mutex
		claims := map[string]int{}
		perNode := make([]int, 2)
		ran := newRanLog()
		var nodes []*node
		for i := range 2 {
			n := e.node(cfg, lifecycle.Config{SessionTTL: time.Minute})
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
	})
}

func TestCrashedClaimComesDueAfterLease(t *testing.T) {
	forEachTopology(t, func(t *testing.T, e *env) {
		const lease = 30 * time.Second
		cfg := Config{SweepEvery: noSweep, PollInterval: 5 * time.Millisecond, Lease: lease}
		live := e.node(cfg, lifecycle.Config{SessionTTL: time.Minute})
		polled := newSignal()
		live.sched.hooks.polled = func([]string) { polled.fire() }
		ran := newRanLog()
		live.sched.hooks.ran = ran.hook
		dead := e.node(cfg, lifecycle.Config{SessionTTL: time.Minute})

		s := create(t, live.svc, "ref-crash", false)
		e.clock.Advance(time.Minute)
		cs, err := dead.sched.claimShards(e.ctx, lifecycle.WorkExpire, allShards, e.clock.Now(), 10)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, c := range cs {
			got = append(got, c.ids...)
		}
		if !slices.Equal(got, []string{s.ID}) {
			t.Fatalf("dead claimer got %v, want [%s]", got, s.ID)
		}
		// The dead replica never runs it. The live one must leave it
		// alone while the lease holds...
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
	})
}

func TestExtensionAndResumeRearmExpiry(t *testing.T) {
	forEachTopology(t, func(t *testing.T, e *env) {
		const ttl = 10 * time.Minute
		n := e.node(Config{SweepEvery: noSweep, PollInterval: 5 * time.Millisecond}, lifecycle.Config{SessionTTL: ttl})
		polled := newSignal()
		n.sched.hooks.polled = func([]string) { polled.fire() }
		e.start(n)

		s := create(t, n.svc, "ref-extend", false)
		moved := create(t, n.svc, "ref-moved-on", false)
		for _, to := range []lifecycle.Status{lifecycle.StatusStarted, lifecycle.StatusSubmitted} {
			if _, err := n.svc.Progress(e.ctx, moved.ID, to); err != nil {
				t.Fatal(err)
			}
		}
		first := s.ExpiresAt.Time
		e.clock.Advance(ttl / 2)
		again := create(t, n.svc, "ref-extend", false) // idempotent create extends
		if again.ID != s.ID || !again.ExpiresAt.After(first) {
			t.Fatalf("idempotent create: got %s until %v, want %s extended past %v", again.ID, again.ExpiresAt, s.ID, first)
		}
		// The due index holds the new time limit: what the poller goes by.
		sh, _ := lifecycle.ShardOfSession(s.ID)
		if score, err := e.rdb.ZScore(e.ctx, n.svc.DueKey(sh, lifecycle.WorkExpire), s.ID).Result(); err != nil || int64(score) != again.ExpiresAt.UnixMilli() {
			t.Fatalf("expire due entry after the extension: %v, %v; want %d", int64(score), err, again.ExpiresAt.UnixMilli())
		}

		e.clock.Set(first)
		polled.waitNext(t, 3, "three polls at the old expires_at")
		if got := e.events("session.expired"); len(got) != 0 {
			t.Fatalf("expired at the old time: %v", got)
		}

		e.clock.Set(again.ExpiresAt.Time)
		e.waitEvents("session.expired", 1)
		resumed, err := n.svc.Resume(e.ctx, s.ID)
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
		m, err := n.svc.Get(e.ctx, moved.ID)
		if err != nil {
			t.Fatal(err)
		}
		if m.Status != lifecycle.StatusSubmitted {
			t.Errorf("moved-on session is %s, want submitted", m.Status)
		}
	})
}

func TestAlarmWakesPollerForSoonerExpiry(t *testing.T) {
	forEachTopology(t, func(t *testing.T, e *env) {
		// The wall clock: the poller's sleeps are real, so only a wake-up
		// can bring an expiry due in 300 ms before the poll interval
		// (a minute) has passed.
		e.now = time.Now
		n := e.node(Config{SweepEvery: noSweep, PollInterval: time.Minute}, lifecycle.Config{SessionTTL: 300 * time.Millisecond})
		polled := newSignal()
		n.sched.hooks.polled = func([]string) { polled.fire() }
		ran := newRanLog()
		n.sched.hooks.ran = ran.hook
		e.start(n)
		polled.wait(t, 1, "the first poll") // the index is empty: it sleeps a minute

		s := create(t, n.svc, "ref-soon", false)
		evs := e.waitEvents("session.expired", 1)[s.ID]
		if len(evs) != 1 {
			t.Fatalf("got %d expired events, want 1", len(evs))
		}
		if ts := evs[0].Timestamp.Time; ts.Before(s.ExpiresAt.Time) {
			t.Errorf("expired at %v, before expires_at %v", ts, s.ExpiresAt)
		}
		ran.waitSources(t, s.ID, "poller/expire")
	})
}

func TestPollerSeesOtherReplicasExpiryWithinPollInterval(t *testing.T) {
	forEachTopology(t, func(t *testing.T, e *env) {
		const interval = 300 * time.Millisecond
		n := e.node(Config{SweepEvery: noSweep, PollInterval: interval}, lifecycle.Config{SessionTTL: time.Minute})
		ran := newRanLog()
		n.sched.hooks.ran = ran.hook
		e.start(n)
		// Another replica's change: this replica's alarm never hears of it.
		other := e.service(lifecycle.Config{SessionTTL: time.Minute})

		s := create(t, other, "ref-elsewhere", false)
		e.clock.Advance(time.Minute)
		advanced := time.Now()
		ran.waitSources(t, s.ID, "poller/expire")
		// The poller looks at least every interval; the rest is the Run
		// and a loaded test host.
		if took := time.Since(advanced); took > interval+time.Second {
			t.Errorf("expired %v after it came due; want within the poll interval (%v)", took, interval)
		}
	})
}

func TestAlarmHearsExpiriesSetWhilePollerClaims(t *testing.T) {
	woken := func(a *Alarm) bool {
		select {
		case <-a.wake:
			return true
		default:
			return false
		}
	}
	at := func(ms int64) lifecycle.Work {
		return lifecycle.Work{Kind: lifecycle.WorkExpire, SessionID: "s", At: time.UnixMilli(ms)}
	}
	a := NewAlarm()
	a.Due(at(50)) // before the first claim: the claim sees it
	a.claiming()
	if woken(a) {
		t.Error("a wake-up from before the claim is still pending after claiming")
	}
	// Committed after the claim read the index, before the poller sleeps:
	// the sleep is cut short to it.
	a.Due(at(300))
	a.Due(at(200))
	a.Due(at(400))
	if got := a.sleepUntil(1000); got != 200 {
		t.Errorf("sleepUntil(1000) after expiries at 300, 200, 400 = %d, want 200", got)
	}
	// While the poller sleeps until 1000: a sooner expiry wakes it, a
	// later one or other work does not.
	for _, tt := range []struct {
		w    lifecycle.Work
		wake bool
	}{
		{at(1000), false},
		{at(5000), false},
		{lifecycle.Work{Kind: lifecycle.WorkRedact, SessionID: "s", At: time.UnixMilli(10)}, false},
		{lifecycle.Work{Kind: lifecycle.WorkPurge, SessionID: "s", At: time.UnixMilli(10)}, false},
		{at(999), true},
	} {
		a.Due(tt.w)
		if got := woken(a); got != tt.wake {
			t.Errorf("Due(%s at %d) while asleep until 1000: woke %v, want %v", tt.w.Kind, tt.w.At.UnixMilli(), got, tt.wake)
		}
	}
	// The next claim starts afresh.
	a.claiming()
	if got := a.sleepUntil(2000); got != 2000 {
		t.Errorf("sleepUntil(2000) with nothing heard since claiming = %d, want 2000", got)
	}
}
