package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"

	"github.com/sessiond/sessiond/internal/keyspace"
	"github.com/sessiond/sessiond/lifecycle"
)

// Once per tick across replicas. Every replica's cron fires at the same
// wall-clock multiples of SweepEvery (aligned) and enqueues one Asynq task
// whose TaskID is the tick; Asynq refuses the second and third with a TaskID
// conflict, so one replica's server runs the sweep. We chose this over a
// Redis SET NX lock per tick because the sweep then is an ordinary task:
// the once-per-tick decision and the run are one atomic enqueue (no lock to
// expire or to leak), it runs on whichever replica has a free worker, a
// failed sweep is archived with its error where operators look (the Asynq
// UI), and it needs no key of ours. A TaskID stays taken while a task holds
// it, so a completed sweep is retained for two periods (long enough for a
// late replica to conflict, short enough not to pile up); tick ids never
// repeat, so an archived sweep blocks nothing. A sweep cut off (killed
// replica, timeout) is not retried: the next tick claims what it left, and
// its claims come due again when their lease ends.

// aligned is a cron schedule that fires at every multiple of d, the same
// instants on every replica.
type aligned struct{ d time.Duration }

func (a aligned) Next(t time.Time) time.Time { return t.Truncate(a.d).Add(a.d) }

// tick is the cron job: it enqueues this tick's sweep.
func (s *Scheduler) tick() {
	// The cron fires on the tick (or just after); rounding names the tick
	// even when this replica is a little late.
	tick := time.Now().Round(s.cfg.SweepEvery)
	ctx, cancel := context.WithTimeout(s.workCtx, s.cfg.ScheduleTimeout)
	defer cancel()
	err := s.enqueueSweep(ctx, tick)
	switch {
	case err == nil:
	case errors.Is(err, asynq.ErrTaskIDConflict):
		// Another replica enqueued this tick first.
	default:
		s.log.Warn("enqueue sweep", "tick", tick, "err", err.Error())
	}
	if s.hooks.ticked != nil {
		s.hooks.ticked(tick, err == nil)
	}
}

// typeSweep is the Asynq task type of a sweep.
const typeSweep = "sessiond:sweep"

// sweepTaskID is the TaskID of the sweep of tick: one per tick across
// replicas.
func sweepTaskID(tick time.Time) string { return "sweep:" + strconv.FormatInt(tick.UnixMilli(), 10) }

type sweepPayload struct {
	Tick int64 `json:"tick"` // unix ms
}

func (s *Scheduler) enqueueSweep(ctx context.Context, tick time.Time) error {
	payload, err := json.Marshal(sweepPayload{Tick: tick.UnixMilli()})
	if err != nil {
		return fmt.Errorf("encode sweep: %w", err)
	}
	_, err = s.client.EnqueueContext(ctx, asynq.NewTask(typeSweep, payload),
		asynq.Queue(s.queue),
		asynq.TaskID(sweepTaskID(tick)),
		asynq.MaxRetry(0), // the next tick repairs what this one missed
		asynq.Timeout(max(10*s.cfg.SweepEvery, 5*time.Minute)),
		asynq.Retention(max(2*s.cfg.SweepEvery, time.Second)),
	)
	if err != nil {
		return fmt.Errorf("enqueue sweep: %w", err)
	}
	return nil
}

// handleSweep runs one tick's sweep.
func (s *Scheduler) handleSweep(ctx context.Context, t *asynq.Task) error {
	s.handlers.Add(1)
	defer s.handlers.Done()
	var p sweepPayload
	if err := json.Unmarshal(t.Payload(), &p); err != nil {
		return fmt.Errorf("sweep payload %q: %w", t.Payload(), asynq.SkipRetry)
	}
	tick := time.UnixMilli(p.Tick)
	start := time.Now()
	done, err := s.sweep(ctx)
	attrs := []any{"tick", tick, "duration_ms", time.Since(start).Milliseconds(),
		"expired", done[lifecycle.WorkExpire], "redacted", done[lifecycle.WorkRedact], "purged", done[lifecycle.WorkPurge]}
	if err != nil {
		s.log.Warn("sweep", append(attrs, "err", err.Error())...)
	} else if done[lifecycle.WorkExpire]+done[lifecycle.WorkRedact]+done[lifecycle.WorkPurge] > 0 {
		s.log.Info("sweep repaired timed work", attrs...)
	} else {
		s.log.Debug("sweep", attrs...)
	}
	if s.hooks.swept != nil {
		s.hooks.swept(tick)
	}
	return err
}

// sweepOrder is the order in which a sweep takes the kinds of work.
// Expiry first: it is the one that is late for users. Purge before
// redaction: a purge removes all a redaction would, so a session due for
// both (after an outage, or with RecordRetention equal to Retention) is
// purged once rather than rewritten and then purged; and a redaction
// committed at or past the purge time would end the record through its
// TTL, so that the purge that follows finds nothing to purge.
var sweepOrder = []lifecycle.WorkKind{lifecycle.WorkExpire, lifecycle.WorkPurge, lifecycle.WorkRedact}

// sweep claims, batch by batch, everything due in every shard's due
// indexes and runs it; it returns how many Runs changed something, by kind.
// Claims make it safe beside the poller and a concurrent sweep.
func (s *Scheduler) sweep(ctx context.Context) (map[lifecycle.WorkKind]int, error) {
	done := make(map[lifecycle.WorkKind]int, len(sweepOrder))
	for _, k := range sweepOrder {
		shards := allShards
		for len(shards) > 0 {
			if err := ctx.Err(); err != nil {
				return done, err
			}
			cs, err := s.claimShards(ctx, k, shards, s.now(), s.cfg.SweepBatch)
			if err != nil {
				return done, fmt.Errorf("sweep: %w", err)
			}
			var changed atomic.Int64
			var wg sync.WaitGroup
			var more []keyspace.Shard // shards whose claim was full
			for _, c := range cs {
				for _, id := range c.ids {
					if _, err := s.sweepPool.acquire(ctx, 1); err != nil {
						break // ctx is done; the lease brings the rest back
					}
					wg.Add(1)
					s.sweepPool.goRun(func() {
						defer wg.Done()
						if s.runClaimed(ctx, "sweep", k, c.shard, id, c.leaseEnd) {
							changed.Add(1)
						}
					})
				}
				if len(c.ids) == s.cfg.SweepBatch {
					more = append(more, c.shard)
				}
			}
			wg.Wait()
			done[k] += int(changed.Load())
			shards = more
		}
	}
	return done, nil
}
