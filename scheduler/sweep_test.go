package scheduler

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/sessiond/sessiond/lifecycle"
)

func TestSweepRepairsLostWork(t *testing.T) {
	const later = time.Hour
	tests := []struct {
		kind  lifecycle.WorkKind
		lcfg  lifecycle.Config
		setup func(t *testing.T, svc *lifecycle.Service, id string)
		check func(t *testing.T, e *env, svc *lifecycle.Service, id string)
	}{
		{
			kind:  lifecycle.WorkExpire,
			lcfg:  lifecycle.Config{SessionTTL: later},
			setup: func(*testing.T, *lifecycle.Service, string) {},
			check: func(t *testing.T, e *env, _ *lifecycle.Service, id string) {
				if got := len(e.events("session.expired")[id]); got != 1 {
					t.Errorf("got %d expired events, want 1", got)
				}
			},
		},
		{
			kind: lifecycle.WorkRedact,
			lcfg: lifecycle.Config{SessionTTL: 2 * later, Retention: later},
			setup: func(t *testing.T, svc *lifecycle.Service, id string) {
				if _, err := svc.Cancel(context.Background(), id); err != nil {
					t.Fatal(err)
				}
			},
			check: func(t *testing.T, _ *env, svc *lifecycle.Service, id string) {
				s, err := svc.Get(context.Background(), id)
				if err != nil {
					t.Fatal(err)
				}
				if s.Person != nil || s.RedactedAt == nil {
					t.Errorf("not redacted: person %s, redacted_at %v", s.Person, s.RedactedAt)
				}
			},
		},
		{
			kind: lifecycle.WorkPurge,
			lcfg: lifecycle.Config{SessionTTL: 2 * later, PurgeAfter: later},
			setup: func(t *testing.T, svc *lifecycle.Service, id string) {
				if err := svc.Delete(context.Background(), id); err != nil {
					t.Fatal(err)
				}
			},
			check: func(t *testing.T, e *env, _ *lifecycle.Service, id string) {
				if keys := e.keysOf(id); len(keys) != 0 {
					t.Errorf("keys left after the purge: %v", keys)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(string(tt.kind), func(t *testing.T) {
			e := newEnv(t)
			// No poller: the sweep is the only path once the task is gone.
			n := e.node(Config{SweepEvery: 100 * time.Millisecond, PollInterval: -1}, tt.lcfg, true)
			ran := newRanLog()
			n.sched.hooks.ran = ran.hook
			e.start(n)

			s := create(t, n.svc, "ref-lost", true)
			tt.setup(t, n.svc, s.ID)
			queues, err := n.sched.inspector.Queues()
			if err != nil {
				t.Fatal(err)
			}
			lost := 0
			for _, q := range queues {
				n, err := n.sched.inspector.DeleteAllScheduledTasks(q)
				if err != nil {
					t.Fatal(err)
				}
				lost += n
			}
			if lost == 0 {
				t.Fatal("no task to lose; the test proves nothing")
			}
			e.clock.Advance(later)
			ran.waitSources(t, s.ID, "sweep/"+string(tt.kind))
			tt.check(t, e, n.svc, s.ID)
		})
	}
}

func TestSweepRunsOncePerTickAcrossReplicas(t *testing.T) {
	e := newEnv(t)
	const replicas, ticks = 3, 5
	var mu sync.Mutex
	// By tick (unix ms): replicas whose cron fired on it, enqueues, sweeps.
	attempts, enqueued, swept := map[int64]int{}, map[int64]int{}, map[int64]int{}
	done := newSignal()
	var nodes []*node
	for range replicas {
		n := e.node(Config{SweepEvery: 200 * time.Millisecond, PollInterval: -1}, lifecycle.Config{}, true)
		n.sched.hooks.ticked = func(tick time.Time, ok bool) {
			mu.Lock()
			defer mu.Unlock()
			attempts[tick.UnixMilli()]++
			if ok {
				enqueued[tick.UnixMilli()]++
			}
		}
		n.sched.hooks.swept = func(tick time.Time) {
			mu.Lock()
			swept[tick.UnixMilli()]++
			mu.Unlock()
			done.fire()
		}
		nodes = append(nodes, n)
		e.start(n)
	}
	done.wait(t, ticks+1, "sweeps")
	for _, n := range nodes {
		if err := n.sched.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
	}

	mu.Lock()
	defer mu.Unlock()
	full := 0
	for tick, n := range attempts {
		if enqueued[tick] > 1 {
			t.Errorf("tick %v enqueued %d times", tick, enqueued[tick])
		}
		if swept[tick] > 1 {
			t.Errorf("tick %v swept %d times", tick, swept[tick])
		}
		if n == replicas && enqueued[tick] == 1 && swept[tick] == 1 {
			full++
		}
	}
	for tick, n := range swept {
		if enqueued[tick] != 1 {
			t.Errorf("tick %v swept %d times but enqueued %d times", tick, n, enqueued[tick])
		}
	}
	if full < ticks {
		t.Errorf("only %d ticks fired on all %d replicas and swept once; want at least %d (attempts %v, swept %v)", full, replicas, ticks, attempts, swept)
	}
}
