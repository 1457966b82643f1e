package scheduler

import (
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/lifecycle"
)

func TestReleaseKeepsRescheduledWorkAndDropsStale(t *testing.T) {
	forEachTopology(t, func(t *testing.T, e *env) {
		const ttl = 10 * time.Minute
		n := e.node(Config{SweepEvery: noSweep, PollInterval: noPoll}, lifecycle.Config{SessionTTL: ttl})
		ran := newRanLog()
		n.sched.hooks.ran = ran.hook
		s := create(t, n.svc, "ref-claimed", false)
		sh, _ := lifecycle.ShardOfSession(s.ID)
		due := n.svc.DueKey(sh, lifecycle.WorkExpire)

		// A claim at the time limit, then an extension that commits
		// before the claimed Run: the Run finds nothing due, and the
		// release must keep the entry the extension rescheduled.
		claimOf := func(at time.Time) claimed {
			t.Helper()
			cs, err := n.sched.claimShards(e.ctx, lifecycle.WorkExpire, allShards, at, 10)
			if err != nil {
				t.Fatal(err)
			}
			if c := cs[sh]; len(c.ids) == 1 && c.ids[0] == s.ID {
				return c
			}
			t.Fatalf("claim at %v: got %+v, want [%s] in shard %d", at, cs[sh], s.ID, sh)
			return claimed{}
		}
		c := claimOf(s.ExpiresAt.Time)
		e.clock.Advance(ttl / 2)
		again := create(t, n.svc, "ref-claimed", false) // extends
		if n.sched.runClaimed(e.ctx, "poller", lifecycle.WorkExpire, sh, s.ID, c.leaseEnd) {
			t.Fatal("the claimed Run expired an extended session")
		}
		score, err := e.rdb.ZScore(e.ctx, due, s.ID).Result()
		if err != nil || int64(score) != again.ExpiresAt.UnixMilli() {
			t.Fatalf("expire entry after the release: %d, %v; want the extension's %d", int64(score), err, again.ExpiresAt.UnixMilli())
		}
		e.clock.Set(again.ExpiresAt.Time)
		c = claimOf(again.ExpiresAt.Time)
		if !n.sched.runClaimed(e.ctx, "poller", lifecycle.WorkExpire, sh, s.ID, c.leaseEnd) {
			t.Fatal("the Run at the extended time limit changed nothing")
		}

		// A stale entry (its session is expired already): the Run changes
		// nothing and the release drops the entry, so that it does not
		// come back every lease.
		if err := e.rdb.ZAdd(e.ctx, due, redis.Z{Score: float64(e.clock.Now().UnixMilli()), Member: s.ID}).Err(); err != nil {
			t.Fatal(err)
		}
		c = claimOf(e.clock.Now())
		if n.sched.runClaimed(e.ctx, "sweep", lifecycle.WorkExpire, sh, s.ID, c.leaseEnd) {
			t.Fatal("the Run of a stale entry changed something")
		}
		if _, err := e.rdb.ZScore(e.ctx, due, s.ID).Result(); !errors.Is(err, redis.Nil) {
			t.Errorf("stale entry after the release: %v, want none", err)
		}
		if got := ran.sources(s.ID); got != "poller/expire" {
			t.Errorf("session changed by %q, want one poller/expire", got)
		}
	})
}
