package dispatcher

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/lifecycle"
)

// The relay moves events from the outbox stream into delivery tasks. Each
// replica reads new entries with XREADGROUP, so an entry goes to one
// replica; for each entry it (1) creates the delivery records, (2)
// enqueues one task per delivery with the delivery id as TaskID, (3)
// acknowledges the entry. Every step can run twice: a record is created
// once and remembers whether its delivery is finished, a second enqueue
// conflicts on the TaskID. An entry whose replica died before (3) stays
// pending in the group and is claimed by the maintenance loop after
// Config.ClaimIdle.

const (
	// relayBlock is how long one XREADGROUP waits for new entries; it
	// returns at once when one arrives. It bounds how long Shutdown waits
	// for the relay.
	relayBlock = 500 * time.Millisecond
	// enqueueConcurrency is how many enqueues of a batch run at once
	// (Asynq has no pipelined enqueue).
	enqueueConcurrency = 32
	// maintainEvery is the period of the maintenance loop.
	maintainEvery = time.Second
	// consumerCleanupEvery and consumerIdle: consumers of the outbox group
	// with nothing pending and idle that long are removed (they were
	// replicas that stopped).
	consumerCleanupEvery = time.Minute
	consumerIdle         = time.Hour
)

// relay reads new outbox entries until ctx is done.
func (d *Dispatcher) relay(ctx context.Context) {
	bo := loopBackoff()
	groupReady := false
	own := false // read this consumer's unacknowledged entries first
	for ctx.Err() == nil {
		if !groupReady {
			if err := d.ensureGroup(ctx); err != nil {
				d.pause(ctx, bo, "create outbox consumer group", err)
				continue
			}
			groupReady = true
		}
		start := ">"
		if own {
			start = "0"
		}
		res, err := d.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group:    relayGroup,
			Consumer: d.consumer,
			Streams:  []string{lifecycle.OutboxKey, start},
			Count:    int64(d.cfg.RelayBatch),
			Block:    relayBlock,
		}).Result()
		switch {
		case errors.Is(err, redis.Nil):
			bo.Reset()
			continue
		case err != nil:
			if ctx.Err() != nil {
				return
			}
			if isNoGroup(err) {
				groupReady = false
			}
			d.pause(ctx, bo, "read outbox", err)
			continue
		}
		var msgs []redis.XMessage
		if len(res) > 0 {
			msgs = res[0].Messages
		}
		if own && len(msgs) == 0 {
			own = false
			continue
		}
		if err := d.relayBatch(ctx, msgs); err != nil {
			if ctx.Err() != nil {
				return
			}
			own = true
			d.pause(ctx, bo, "relay events", err)
			continue
		}
		bo.Reset()
	}
}

// ensureGroup creates the outbox consumer group, reading from the oldest
// kept event, unless it exists.
func (d *Dispatcher) ensureGroup(ctx context.Context) error {
	err := d.rdb.XGroupCreateMkStream(ctx, lifecycle.OutboxKey, relayGroup, "0").Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return err
	}
	return nil
}

func isNoGroup(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "NOGROUP")
}

// enqueueJob is one delivery task to enqueue.
type enqueueJob struct {
	taskID  string
	payload *taskPayload
}

// relayBatch creates the deliveries of a batch of outbox entries, enqueues
// them and acknowledges the entries. On error nothing is acknowledged and
// the whole batch may run again.
func (d *Dispatcher) relayBatch(ctx context.Context, msgs []redis.XMessage) error {
	if len(msgs) == 0 {
		return nil
	}
	var (
		records []*newDelivery
		jobs    []enqueueJob
		ids     = make([]string, 0, len(msgs))
	)
	for _, m := range msgs {
		ids = append(ids, m.ID)
		ev, err := lifecycle.ParseEvent(m)
		if err != nil {
			d.log.Error("skipping malformed outbox entry", "cursor", m.ID, "err", err.Error())
			continue
		}
		for _, ep := range d.order {
			if !ep.wants(ev.Type) || ep.disabledNow() {
				continue
			}
			id := deliveryID(ev.SessionID, ev.ID, ep.id)
			if id == "" {
				d.log.Error("skipping event with an id unfit for a delivery id", "cursor", m.ID, "event_id", ev.ID)
				continue
			}
			records = append(records, &newDelivery{
				id: id, sessionID: ev.SessionID, eventID: ev.ID, eventType: ev.Type,
				endpointID: ep.id, url: ep.shownURL, cursor: m.ID, eventAt: ev.Timestamp.Time,
			})
			jobs = append(jobs, enqueueJob{taskID: id, payload: &taskPayload{
				Delivery: id, Session: ev.SessionID, Event: ev.ID, Type: ev.Type, Endpoint: ep.id, Body: ev.Body,
			}})
		}
	}
	statuses, err := d.store.create(ctx, records)
	if err != nil {
		return err
	}
	todo := jobs[:0]
	for i, j := range jobs {
		// A finished delivery is not sent again, even after its task's
		// retention.
		if s := statuses[i]; s != StatusSucceeded && s != StatusDead {
			todo = append(todo, j)
		}
	}
	if err := d.enqueueAll(ctx, todo); err != nil {
		return err
	}
	if err := d.rdb.XAck(ctx, lifecycle.OutboxKey, relayGroup, ids...).Err(); err != nil {
		return err
	}
	return nil
}

// enqueueAll enqueues jobs, several at a time.
func (d *Dispatcher) enqueueAll(ctx context.Context, jobs []enqueueJob) error {
	if len(jobs) == 1 {
		return d.enqueue(ctx, jobs[0])
	}
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		errs = make([]error, min(len(jobs), enqueueConcurrency))
	)
	for w := range errs {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(jobs) {
					return
				}
				if err := d.enqueue(ctx, jobs[i]); err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// enqueue adds one delivery task; a task with the same id already there
// counts as done.
func (d *Dispatcher) enqueue(ctx context.Context, j enqueueJob) error {
	payload, err := j.payload.encode()
	if err != nil {
		return err
	}
	_, err = d.client.EnqueueContext(ctx, asynq.NewTask(taskType, payload),
		asynq.TaskID(j.taskID),
		asynq.Queue(d.cfg.Queue),
		// One more than the schedule, so that a deferral at the last
		// attempt is not archived; the handler archives (SkipRetry)
		// when the schedule is used up.
		asynq.MaxRetry(d.schedule.retries()+1),
		asynq.Timeout(d.taskTimeout),
		asynq.Retention(d.cfg.TaskRetention),
	)
	switch {
	case errors.Is(err, asynq.ErrTaskIDConflict):
		return nil
	case err != nil:
		return err
	}
	d.stats.enqueued.Add(1)
	return nil
}

// maintain runs the periodic work until ctx is done: it refreshes the
// disabled marks, gives orphaned tasks back, claims outbox entries that a
// dead replica left unacknowledged and removes stopped consumers.
func (d *Dispatcher) maintain(ctx context.Context) {
	t := time.NewTicker(maintainEvery)
	defer t.Stop()
	var lastCleanup time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := d.refreshMarks(ctx); err != nil && ctx.Err() == nil {
			d.log.Debug("read disabled endpoints", "err", err.Error())
		}
		n, err := requeueOrphans(ctx, d.rdb, d.cfg.Queue, d.cfg.OrphanAfter, time.Now())
		if err != nil && ctx.Err() == nil {
			d.log.Debug("requeue orphaned deliveries", "err", err.Error())
		}
		if n > 0 {
			d.stats.requeued.Add(int64(n))
			d.log.Warn("gave back deliveries whose worker died", "deliveries", n)
		}
		d.claim(ctx)
		if now := time.Now(); now.Sub(lastCleanup) >= consumerCleanupEvery {
			lastCleanup = now
			d.removeStoppedConsumers(ctx)
		}
	}
}

// claim takes over outbox entries left unacknowledged for ClaimIdle and
// relays them.
func (d *Dispatcher) claim(ctx context.Context) {
	start := "0-0"
	for ctx.Err() == nil {
		msgs, next, err := d.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{
			Stream:   lifecycle.OutboxKey,
			Group:    relayGroup,
			Consumer: d.consumer,
			MinIdle:  d.cfg.ClaimIdle,
			Start:    start,
			Count:    int64(d.cfg.RelayBatch),
		}).Result()
		if err != nil {
			if ctx.Err() == nil && !isNoGroup(err) {
				d.log.Debug("claim outbox entries", "err", err.Error())
			}
			return
		}
		if len(msgs) > 0 {
			d.log.Info("claimed outbox entries of a stopped relay", "entries", len(msgs))
			if err := d.relayBatch(ctx, msgs); err != nil {
				if ctx.Err() == nil {
					d.log.Warn("relay claimed events", "err", err.Error())
				}
				return
			}
		}
		if next == "" || next == "0-0" {
			return
		}
		start = next
	}
}

// removeStoppedConsumers deletes group consumers with nothing pending that
// have been idle for consumerIdle.
func (d *Dispatcher) removeStoppedConsumers(ctx context.Context) {
	cs, err := d.rdb.XInfoConsumers(ctx, lifecycle.OutboxKey, relayGroup).Result()
	if err != nil {
		return
	}
	for _, c := range cs {
		if c.Name != d.consumer && c.Pending == 0 && c.Idle >= consumerIdle {
			_ = d.rdb.XGroupDelConsumer(ctx, lifecycle.OutboxKey, relayGroup, c.Name).Err()
		}
	}
}

// loopBackoff paces a loop's retries after errors: 50ms growing to 2s.
func loopBackoff() *backoff.ExponentialBackOff {
	return backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(50*time.Millisecond),
		backoff.WithMaxInterval(2*time.Second),
		backoff.WithMaxElapsedTime(0),
	)
}

// pause logs a loop's error and waits its backoff (or until ctx is done).
func (d *Dispatcher) pause(ctx context.Context, bo *backoff.ExponentialBackOff, what string, err error) {
	wait := bo.NextBackOff()
	d.log.Warn(what, "err", err.Error(), "retry_in", wait.String())
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
