package dispatcher

import (
	"context"
	_ "embed"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Asynq v0.26 gives a task whose worker died back to its queue only after
// the task's lease (30 s, extended every 5 s while the worker lives) has
// been expired for 30 s, and looks once a minute: 60 to 120 s after a
// crash. None of that is configurable, so the dispatcher sweeps the
// leases itself.

// asynqLeaseDuration is Asynq's lease length (internal/rdb.LeaseDuration).
const asynqLeaseDuration = 30 * time.Second

// orphanBatch bounds the tasks one sweep call looks at.
const orphanBatch = 1000

var (
	//go:embed scripts/requeue.lua
	requeueLua    string
	requeueScript = redis.NewScript(requeueLua)
)

// requeueOrphans gives back to the queue the tasks whose lease has not been
// extended for orphanAfter, and returns how many. now is wall-clock time:
// Asynq writes its leases from the wall clock.
func requeueOrphans(ctx context.Context, rdb redis.UniversalClient, queue string, orphanAfter time.Duration, now time.Time) (int, error) {
	cutoff := now.Add(asynqLeaseDuration - orphanAfter).Unix()
	total := 0
	for {
		n, err := requeueScript.Run(ctx, rdb,
			[]string{asynqLeaseKey(queue), asynqActiveKey(queue), asynqPendingKey(queue)},
			cutoff, asynqTaskPrefix(queue), now.UnixNano(), orphanBatch).Int()
		if err != nil {
			return total, fmt.Errorf("requeue orphaned tasks: %w", err)
		}
		total += n
		if n < orphanBatch {
			return total, nil
		}
	}
}
