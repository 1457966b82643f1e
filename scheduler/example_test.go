package scheduler_test

import (
	"context"
	"log"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/lifecycle"
	"github.com/sessiond/sessiond/scheduler"
)

// The scheduler is the lifecycle's Timer and drives the same service: build
// it first, then the service with it, then hand it the service and start.
func Example() {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer rdb.Close()

	sched := scheduler.New(rdb, scheduler.Config{SweepEvery: time.Minute})
	svc := lifecycle.New(rdb, lifecycle.Config{SessionTTL: 24 * time.Hour, Timer: sched})
	sched.Drive(svc)
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
