package scheduler_test

import (
	"context"
	"log"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/lifecycle"
	"github.com/sessiond/sessiond/scheduler"
)

// The alarm comes first: it is the lifecycle's Timer and wakes the
// scheduler's poller. Then the service with it, then the scheduler over
// both.
func Example() {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer rdb.Close()

	alarm := scheduler.NewAlarm()
	svc := lifecycle.New(rdb, lifecycle.Config{SessionTTL: 24 * time.Hour, Timer: alarm})
	sched := scheduler.New(rdb, svc, alarm, scheduler.Config{SweepEvery: time.Minute})
	if err := sched.Start(ctx); err != nil {
		log.Print(err)
		return
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = sched.Shutdown(stopCtx)
	}()

	// Every session created from now on expires at its expires_at, within
	// milliseconds, on whichever replica claims it first.
	_, _ = svc.Create(ctx, lifecycle.CreateRequest{RefID: "user-42"})
}
