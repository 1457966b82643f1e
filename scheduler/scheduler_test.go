package scheduler

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/internal/keyspace"
	"github.com/sessiond/sessiond/lifecycle"
)

func TestStartShutdownContract(t *testing.T) {
	e := onOneServer(t)
	ctx := e.ctx

	// Shutdown before Start, twice; a Start after it is refused.
	n := e.node(Config{}, lifecycle.Config{})
	for i := range 2 {
		if err := n.sched.Shutdown(ctx); err != nil {
			t.Fatalf("Shutdown #%d before Start: %v", i+1, err)
		}
	}
	if err := n.sched.Start(ctx); err == nil {
		t.Fatal("Start after Shutdown succeeded")
	}

	// A Redis that cannot be reached fails Start, and the scheduler can
	// still be shut down.
	down := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	defer down.Close()
	unreachable := New(down, n.svc, nil, Config{})
	if err := unreachable.Start(ctx); err == nil {
		t.Error("Start with Redis unreachable succeeded")
	}
	if err := unreachable.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	// Start, a refused second Start, then Shutdown twice.
	n = e.node(Config{}, lifecycle.Config{})
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
	// The lifecycle may still change sessions after the scheduler stopped
	// (the admin API drains after it): the alarm does not block, and the
	// due index keeps the work for the other replicas.
	s := create(t, n.svc, "ref-after", false)
	sh, _ := lifecycle.ShardOfSession(s.ID)
	score, err := e.rdb.ZScore(ctx, n.svc.DueKey(sh, lifecycle.WorkExpire), s.ID).Result()
	if err != nil || int64(score) != s.ExpiresAt.UnixMilli() {
		t.Errorf("due index after Shutdown: %v, %v; want %d", int64(score), err, s.ExpiresAt.UnixMilli())
	}
}

func TestShutdownHonoursDeadline(t *testing.T) {
	e := onOneServer(t)
	block := make(chan struct{})
	svc := e.service(lifecycle.Config{SessionTTL: time.Minute})
	sched := New(e.rdb, blockingService{svc, block}, nil, Config{SweepEvery: noSweep, PollInterval: 5 * time.Millisecond, Now: e.now})
	t.Cleanup(func() { // if the test stops early; a second Shutdown does nothing
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = sched.Shutdown(ctx)
	})
	if err := sched.Start(e.ctx); err != nil {
		t.Fatal(err)
	}
	create(t, svc, "ref-stuck", false)
	e.clock.Advance(time.Minute)
	waitFor(t, 5*time.Second, "the poller to be stuck in Run", func() bool { return len(sched.pollPool.sem) > 0 })

	ctx, cancel := context.WithTimeout(e.ctx, 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- sched.Shutdown(ctx) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("Shutdown took %v with a 200ms deadline", took)
		}
	case <-time.After(10 * time.Second):
		close(block) // let Shutdown end, so that the test can
		<-done
		t.Fatal("Shutdown with a 200ms deadline still waited for a Run after 10s")
	}
}

// blockingService is a Service whose Run waits for its context or block.
type blockingService struct {
	svc   *lifecycle.Service
	block chan struct{}
}

func (b blockingService) Run(ctx context.Context, _ lifecycle.WorkKind, _ string) (bool, error) {
	select {
	case <-ctx.Done():
		return false, ctx.Err()
	case <-b.block:
		return false, nil
	}
}

func (b blockingService) DueKey(sh keyspace.Shard, kind lifecycle.WorkKind) string {
	return b.svc.DueKey(sh, kind)
}
