package scheduler

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/internal/keyspace"
	"github.com/sessiond/sessiond/lifecycle"
)

func TestSweepRepairsLostWork(t *testing.T) {
	const later = time.Hour
	// gone checks that nothing of a purged session is left in Redis but
	// its reduced outbox events.
	gone := func(t *testing.T, e *env, svc *lifecycle.Service, c *lifecycle.Created) {
		t.Helper()
		if _, err := svc.Get(e.ctx, c.ID); !errors.Is(err, lifecycle.ErrNotFound) {
			t.Errorf("Get after the purge: %v, want ErrNotFound", err)
		}
		stored := e.stored()
		for _, s := range []string{c.ID, c.RefID, personName} {
			if strings.Contains(stored, s) {
				t.Errorf("%q still in Redis after the purge:\n%s", s, stored)
			}
		}
	}
	tests := []struct {
		name     string
		kind     lifecycle.WorkKind
		lcfg     lifecycle.Config
		personal bool
		setup    func(t *testing.T, e *env, svc *lifecycle.Service, id string)
		check    func(t *testing.T, e *env, svc *lifecycle.Service, c *lifecycle.Created)
	}{
		{
			name: "expire at SessionTTL",
			kind: lifecycle.WorkExpire,
			lcfg: lifecycle.Config{SessionTTL: later},
			check: func(t *testing.T, e *env, svc *lifecycle.Service, c *lifecycle.Created) {
				if got := len(e.events("session.expired")[c.ID]); got != 1 {
					t.Errorf("got %d expired events, want 1", got)
				}
			},
		},
		{
			name:     "redact at Retention",
			kind:     lifecycle.WorkRedact,
			lcfg:     lifecycle.Config{SessionTTL: 2 * later, Retention: later},
			personal: true,
			setup: func(t *testing.T, e *env, svc *lifecycle.Service, id string) {
				if _, err := svc.Cancel(e.ctx, id); err != nil {
					t.Fatal(err)
				}
				e.assertKeysExpire(id, "s:", "p:", "ev:")
			},
			check: func(t *testing.T, e *env, svc *lifecycle.Service, c *lifecycle.Created) {
				s, err := svc.Get(e.ctx, c.ID)
				if err != nil {
					t.Fatal(err)
				}
				if s.Person != nil || s.Metadata != nil || s.RedactedAt == nil {
					t.Errorf("after retention: person %s, metadata %s, redacted_at %v; want none, none, set", s.Person, s.Metadata, s.RedactedAt)
				}
				if evs := e.events("session.redacted")[c.ID]; len(evs) != 1 {
					t.Errorf("got %d redacted events, want 1", len(evs))
				}
				e.assertKeysExpire(c.ID, "s:", "ev:")
				if keys := e.keysNaming("p:" + c.ID); len(keys) != 0 {
					t.Errorf("personal data keys left after the redaction: %v", keys)
				}
			},
		},
		{
			name:     "purge at PurgeAfter after a delete",
			kind:     lifecycle.WorkPurge,
			lcfg:     lifecycle.Config{SessionTTL: 2 * later, PurgeAfter: later},
			personal: true,
			setup: func(t *testing.T, e *env, svc *lifecycle.Service, id string) {
				if err := svc.Delete(e.ctx, id); err != nil {
					t.Fatal(err)
				}
			},
			check: gone,
		},
		{
			// Redacted by hand long before, as by retention: only the
			// purge is due.
			name:     "purge at RecordRetention",
			kind:     lifecycle.WorkPurge,
			lcfg:     lifecycle.Config{SessionTTL: 2 * later, Retention: later / 2, RecordRetention: later},
			personal: true,
			setup: func(t *testing.T, e *env, svc *lifecycle.Service, id string) {
				if _, err := svc.Cancel(e.ctx, id); err != nil {
					t.Fatal(err)
				}
				if _, err := svc.Redact(e.ctx, id); err != nil {
					t.Fatal(err)
				}
			},
			check: gone,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			forEachTopology(t, func(t *testing.T, e *env) {
				// No poller: only the sweep does timed work.
				n := e.node(Config{SweepEvery: 100 * time.Millisecond, PollInterval: noPoll}, tt.lcfg)
				ran := newRanLog()
				n.sched.hooks.ran = ran.hook
				e.start(n)

				// One session in every shard.
				var sessions []*lifecycle.Created
				for _, refs := range refsInShards("ref-lost", 1) {
					c := create(t, n.svc, refs[0], tt.personal)
					if tt.setup != nil {
						tt.setup(t, e, n.svc, c.ID)
					}
					sessions = append(sessions, c)
				}
				// What the work removes is there before it.
				before := e.stored()
				for _, c := range sessions {
					for _, s := range map[lifecycle.WorkKind][]string{lifecycle.WorkRedact: {personName}, lifecycle.WorkPurge: {c.ID, c.RefID}}[tt.kind] {
						if !strings.Contains(before, s) {
							t.Fatalf("%q not in Redis before the sweep; the test proves nothing", s)
						}
					}
				}
				e.clock.Advance(later)
				want := "sweep/" + string(tt.kind)
				for _, c := range sessions {
					var got string
					if !poll(15*time.Second, func() bool { got = ran.sources(c.ID); return strings.Contains(got, want) }) {
						t.Fatalf("session %s (shard %d) changed by %q; want %s", c.ID, keyspace.ShardOf(c.RefID), got, want)
					}
					if strings.Count(got, want) != 1 || strings.Contains(got, "poller/") {
						t.Errorf("session %s changed by %q; want %s once, by sweeps only", c.ID, got, want)
					}
					tt.check(t, e, n.svc, c)
				}
			})
		})
	}
}

// assertKeysExpire checks that a key of session id exists for each of
// kinds (key kinds of internal/keyspace, e.g. "s:") and that every key of
// the namespace naming id has a TTL.
func (e *env) assertKeysExpire(id string, kinds ...string) {
	e.t.Helper()
	keys := e.keysNaming(id)
	for _, kind := range kinds {
		found := false
		for _, k := range keys {
			found = found || strings.HasSuffix(k, "}:"+kind+id)
		}
		if !found {
			e.t.Errorf("no %s key of session %s among %v", kind, id, keys)
		}
	}
	for _, k := range keys {
		ttl, err := e.rdb.PTTL(e.ctx, k).Result()
		if err != nil {
			e.t.Fatal(err)
		}
		if ttl <= 0 {
			e.t.Errorf("key %s has no TTL (%v)", k, ttl)
		}
	}
}

func TestSweepTakesMoreThanABatchPerShard(t *testing.T) {
	forEachTopology(t, func(t *testing.T, e *env) {
		const batch, perShard = 2, 5 // three claims in each shard and kind
		const later = time.Hour
		n := e.node(Config{SweepEvery: noSweep, PollInterval: noPoll, SweepBatch: batch},
			lifecycle.Config{SessionTTL: later, PurgeAfter: later})
		ran := newRanLog()
		n.sched.hooks.ran = ran.hook
		// Every shard: perShard sessions to expire and perShard deleted
		// ones to purge.
		var expire, purge []string
		for _, refs := range refsInShards("ref-many", 2*perShard) {
			for i, ref := range refs {
				c := create(t, n.svc, ref, false)
				if i < perShard {
					expire = append(expire, c.ID)
					continue
				}
				if err := n.svc.Delete(e.ctx, c.ID); err != nil {
					t.Fatal(err)
				}
				purge = append(purge, c.ID)
			}
		}
		e.clock.Advance(later)

		// One sweep, called as a sweep task calls it.
		done, err := n.sched.sweep(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := map[lifecycle.WorkKind]int{lifecycle.WorkExpire: len(expire), lifecycle.WorkPurge: len(purge), lifecycle.WorkRedact: 0}
		if fmt.Sprint(done) != fmt.Sprint(want) {
			t.Errorf("one sweep did %v, want %v", done, want)
		}
		for kind, ids := range map[lifecycle.WorkKind][]string{lifecycle.WorkExpire: expire, lifecycle.WorkPurge: purge} {
			for _, id := range ids {
				if got, want := ran.sources(id), "sweep/"+string(kind); got != want {
					t.Errorf("session %s changed by %q, want %q", id, got, want)
				}
			}
		}
		for sh := range keyspace.Shards {
			for _, kind := range []lifecycle.WorkKind{lifecycle.WorkExpire, lifecycle.WorkPurge} {
				left, err := e.rdb.ZRangeByScore(e.ctx, n.svc.DueKey(keyspace.Shard(sh), kind), &redis.ZRangeBy{Min: "-inf", Max: strconv.FormatInt(e.clock.Now().UnixMilli(), 10)}).Result()
				if err != nil {
					t.Fatal(err)
				}
				if len(left) != 0 {
					t.Errorf("shard %d: %s due after the sweep: %v", sh, kind, left)
				}
			}
		}
	})
}

func TestSweepRunsOncePerTickAcrossReplicas(t *testing.T) {
	forEachTopology(t, func(t *testing.T, e *env) {
		const replicas, ticks = 3, 5
		var mu sync.Mutex
		// By tick (unix ms): replicas whose cron fired on it, enqueues,
		// sweeps.
		attempts, enqueued, swept := map[int64]int{}, map[int64]int{}, map[int64]int{}
		done := newSignal()
		var nodes []*node
		for range replicas {
			n := e.node(Config{SweepEvery: 200 * time.Millisecond, PollInterval: noPoll}, lifecycle.Config{})
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
			if err := n.sched.Shutdown(e.ctx); err != nil {
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
	})
}

func TestSweepOrderHasEveryKindOnce(t *testing.T) {
	got := slices.Sorted(slices.Values(sweepOrder))
	if want := slices.Sorted(slices.Values(lifecycle.WorkKinds)); !slices.Equal(got, want) {
		t.Errorf("sweepOrder has %v, want each of %v once", sweepOrder, lifecycle.WorkKinds)
	}
}

func TestAlignedTicksAgreeAcrossReplicas(t *testing.T) {
	every := aligned{time.Minute}
	base := time.Date(2030, 1, 2, 3, 4, 0, 0, time.UTC)
	tests := []struct {
		now, want time.Time
	}{
		{base, base.Add(time.Minute)},
		{base.Add(time.Millisecond), base.Add(time.Minute)},
		{base.Add(59*time.Second + 999*time.Millisecond), base.Add(time.Minute)},
	}
	for _, tt := range tests {
		if got := every.Next(tt.now); !got.Equal(tt.want) {
			t.Errorf("Next(%v) = %v, want %v", tt.now, got, tt.want)
		}
	}
	// A replica that fires a little late still names the same tick.
	if a, b := sweepTaskID(base.Round(time.Minute)), sweepTaskID(base.Add(40*time.Millisecond).Round(time.Minute)); a != b {
		t.Errorf("tick ids differ: %s vs %s", a, b)
	}
}
