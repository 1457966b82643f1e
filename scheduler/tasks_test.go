package scheduler

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sessiond/sessiond/lifecycle"
)

// tasksOnly is a configuration with neither poller nor sweep: only the
// Asynq tasks do timed work.
var tasksOnly = Config{SweepEvery: noSweep, PollInterval: -1, DelayedTaskCheckInterval: 100 * time.Millisecond}

func TestEarlyTaskWaitsAndIsNotLost(t *testing.T) {
	e := newEnv(t)
	// The injected clock is 10 s behind the wall clock Asynq uses, so the
	// task Asynq runs at once is early by the service's clock: the skew an
	// early task looks like.
	e.clock.Set(time.Now().Add(-10 * time.Second).Truncate(time.Millisecond))
	n := e.node(tasksOnly, lifecycle.Config{SessionTTL: 500 * time.Millisecond}, true)
	early := newSignal()
	n.sched.hooks.notDue = func(lifecycle.WorkKind, string) { early.fire() }
	ran := newRanLog()
	n.sched.hooks.ran = ran.hook
	e.start(n)

	s := create(t, n.svc, "ref-early", false)
	early.wait(t, 1, "the early run")
	if got := e.events("session.expired"); len(got) != 0 {
		t.Fatalf("expired early: %v", got)
	}
	if got := ran.sources(s.ID); got != "" {
		t.Fatalf("changed before its time by %q", got)
	}
	if info, err := n.sched.inspector.GetTaskInfo(QueueExpiry, workTaskID(lifecycle.WorkExpire, s.ID, 1)); err != nil {
		t.Fatalf("the early task is gone: %v", err)
	} else if info.Retried != 0 {
		t.Errorf("an early run counted as a failure: retried %d", info.Retried)
	}

	e.clock.Set(s.ExpiresAt.Time)
	evs := e.waitEvents("session.expired", 1)[s.ID]
	if len(evs) != 1 {
		t.Fatalf("got %d expired events, want 1", len(evs))
	}
	if evs[0].Timestamp.Before(s.ExpiresAt.Time) {
		t.Errorf("expired at %v, before %v", evs[0].Timestamp, s.ExpiresAt)
	}
	ran.waitSources(t, s.ID, "task/expire")
}

func TestPurgeRemovesEveryKeyOfDeletedSession(t *testing.T) {
	e := newEnv(t)
	const purgeAfter = time.Second
	n := e.node(tasksOnly, lifecycle.Config{SessionTTL: time.Hour, PurgeAfter: purgeAfter}, true)
	purged := newSignal()
	n.sched.hooks.ran = func(src string, k lifecycle.WorkKind, _ string, _ bool) {
		// Changed or not: Redis may have expired the session key itself
		// (its TTL ends at the purge time too); the task still cleans up.
		if src == "task" && k == lifecycle.WorkPurge {
			purged.fire()
		}
	}
	e.start(n)
	ctx := context.Background()

	s := create(t, n.svc, "ref-purge", true)
	if _, err := n.svc.Update(ctx, s.ID, lifecycle.UpdateRequest{Tags: &[]string{"a"}}); err != nil {
		t.Fatal(err) // a second version, so a superseded expiry task waits
	}
	if err := n.svc.Delete(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	if len(e.keysOf(s.ID)) == 0 {
		t.Fatal("nothing of the session in Redis before the purge; the test proves nothing")
	}
	e.clock.Advance(purgeAfter)
	purged.wait(t, 1, "the purge task")
	var left []string
	waitFor(t, 10*time.Second, "no key naming the session", func() bool {
		left = e.keysOf(s.ID)
		return len(left) == 0
	})
	if _, err := n.svc.Get(ctx, s.ID); !errors.Is(err, lifecycle.ErrNotFound) {
		t.Errorf("Get after purge: %v, want ErrNotFound", err)
	}
}

func TestRetentionRedactsAndEverySessionKeyHasTTL(t *testing.T) {
	e := newEnv(t)
	const retention = time.Second
	n := e.node(tasksOnly, lifecycle.Config{SessionTTL: time.Hour, Retention: retention}, true)
	ran := newRanLog()
	n.sched.hooks.ran = ran.hook
	e.start(n)
	ctx := context.Background()

	s := create(t, n.svc, "ref-retain", true)
	if _, err := n.svc.Cancel(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	e.assertSessionKeysExpire(s.ID, []string{":session", ":pii"})

	e.clock.Advance(retention)
	ran.waitSources(t, s.ID, "task/redact")
	got, err := n.svc.Get(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Person != nil || got.Metadata != nil || got.RedactedAt == nil {
		t.Errorf("after retention: person %s, metadata %s, redacted_at %v; want none, none, set", got.Person, got.Metadata, got.RedactedAt)
	}
	if evs := e.events("session.redacted")[s.ID]; len(evs) != 1 {
		t.Errorf("got %d redacted events, want 1", len(evs))
	}
	e.assertSessionKeysExpire(s.ID, []string{":session"})
	for _, k := range e.keysOf(s.ID) {
		if strings.HasSuffix(k, ":pii") {
			t.Errorf("personal data key %s still there after redaction", k)
		}
	}
}

// assertSessionKeysExpire checks that every sessiond key naming id has a
// TTL, and that keys with each wanted suffix exist.
func (e *env) assertSessionKeysExpire(id string, want []string) {
	e.t.Helper()
	keys := e.keysOf(id)
	for _, suffix := range want {
		found := false
		for _, k := range keys {
			found = found || strings.HasSuffix(k, suffix)
		}
		if !found {
			e.t.Errorf("no key ending in %s among %v", suffix, keys)
		}
	}
	for _, k := range keys {
		if !strings.HasPrefix(k, "sessiond:") {
			continue // an Asynq task, gone once it has run
		}
		ttl, err := e.rdb.PTTL(context.Background(), k).Result()
		if err != nil {
			e.t.Fatal(err)
		}
		if ttl <= 0 {
			e.t.Errorf("key %s has no TTL (%v)", k, ttl)
		}
	}
}

func TestStartShutdownContract(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	n := e.node(Config{}, lifecycle.Config{}, true)
	if err := n.sched.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown before Start: %v", err)
	}
	if err := n.sched.Start(ctx); err == nil {
		t.Fatal("Start after Shutdown succeeded")
	}

	n = e.node(Config{}, lifecycle.Config{}, true)
	noService := New(e.rdb, Config{})
	if err := noService.Start(ctx); err == nil {
		t.Error("Start without a service succeeded")
	}
	if err := noService.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n.sched.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n.sched.Start(ctx); err == nil {
		t.Error("second Start succeeded")
	}
	for i := range 2 {
		if err := n.sched.Shutdown(ctx); err != nil {
			t.Fatalf("Shutdown #%d: %v", i+1, err)
		}
	}
	// The lifecycle may still schedule after the scheduler stopped (the
	// admin API drains after it): Schedule does nothing, and the due index
	// keeps the work for the other replicas.
	s := create(t, n.svc, "ref-after", false)
	score, err := e.rdb.ZScore(ctx, lifecycle.ExpireDueKey, s.ID).Result()
	if err != nil || int64(score) != s.ExpiresAt.UnixMilli() {
		t.Errorf("due index after Shutdown: %v, %v; want %d", score, err, s.ExpiresAt.UnixMilli())
	}
}

func TestShutdownHonoursDeadline(t *testing.T) {
	e := newEnv(t)
	block := make(chan struct{})
	n := e.node(Config{SweepEvery: noSweep, PollInterval: 5 * time.Millisecond}, lifecycle.Config{SessionTTL: time.Minute}, false)
	n.sched.Drive(blockingService{block})
	e.start(n)
	create(t, n.svc, "ref-stuck", false)
	e.clock.Advance(time.Minute)
	waitFor(t, 5*time.Second, "the poller to be stuck in Run", func() bool { return len(n.sched.pollPool.sem) > 0 })

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := n.sched.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Shutdown took %v with a 200ms deadline", took)
	}
	close(block)
}

// blockingService is a Service whose Run waits for its context or block.
type blockingService struct{ block chan struct{} }

func (b blockingService) Run(ctx context.Context, _ lifecycle.WorkKind, _ string) (bool, error) {
	select {
	case <-ctx.Done():
		return false, ctx.Err()
	case <-b.block:
		return false, nil
	}
}
