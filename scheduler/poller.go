package scheduler

import (
	"context"
	"math"
	"sync/atomic"
	"time"

	"github.com/sessiond/sessiond/internal/keyspace"
	"github.com/sessiond/sessiond/lifecycle"
)

// Alarm is the lifecycle's Timer: it wakes the expiry poller when a change
// sets an expiry sooner than the poller meant to look. It holds no work:
// the due indexes do. Build it first and give it to both the lifecycle and
// the scheduler.
//
// An expiry set while the poller claims (after its claim read the index,
// before it fell asleep) is not lost: Due also notes the earliest expiry
// it heard of since the claim began, and the poller shortens its sleep to
// it (sleepUntil).
type Alarm struct {
	wake     chan struct{}
	nextWake atomic.Int64 // when the poller means to claim next (unix ms); 0 while it claims
	earliest atomic.Int64 // the earliest expiry heard of since the claim began (unix ms)
}

// NewAlarm returns an Alarm.
func NewAlarm() *Alarm {
	a := &Alarm{wake: make(chan struct{}, 1)}
	a.earliest.Store(math.MaxInt64)
	return a
}

// Due implements lifecycle.Timer. It never blocks.
func (a *Alarm) Due(w lifecycle.Work) {
	if w.Kind != lifecycle.WorkExpire {
		return
	}
	at := w.At.UnixMilli()
	for {
		cur := a.earliest.Load()
		if at >= cur || a.earliest.CompareAndSwap(cur, at) {
			break
		}
	}
	if at < a.nextWake.Load() {
		select {
		case a.wake <- struct{}{}:
		default:
		}
	}
}

// claiming tells the alarm that the poller is about to claim: what is in
// the index now the claim sees, so a wake-up already sent is dropped, and
// the expiries heard of from now on are noted for sleepUntil.
func (a *Alarm) claiming() {
	a.nextWake.Store(0)
	a.earliest.Store(math.MaxInt64)
	select {
	case <-a.wake:
	default:
	}
}

// sleepUntil tells the alarm that the poller means to claim next at until
// (unix ms), so that Due wakes it for sooner work from now on; it returns
// until, or the earliest expiry heard of since claiming if that is sooner.
// (Due notes an expiry before it reads nextWake, and sleepUntil stores
// nextWake before it reads the note: one of the two sees the other.)
func (a *Alarm) sleepUntil(until int64) int64 {
	a.nextWake.Store(until)
	return min(until, a.earliest.Load())
}

// allShards lists every shard.
var allShards = func() []keyspace.Shard {
	out := make([]keyspace.Shard, keyspace.Shards)
	for i := range out {
		out[i] = keyspace.Shard(i)
	}
	return out
}()

// poll is the expiry poller: it claims due ids from every shard's expire
// index and runs them on a bounded pool; then it sleeps until the earliest
// next due time, at most PollInterval, or until the Alarm brings earlier
// work. Several replicas poll the same indexes; the claim script gives each
// id to one of them. A change made by another replica is seen within
// PollInterval (its own replica's alarm wakes that one at once).
func (s *Scheduler) poll(ctx context.Context) {
	defer close(s.pollDone)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var lastErr time.Time
	for {
		n, err := s.pollPool.acquire(ctx, s.cfg.SweepBatch)
		if err != nil {
			return
		}
		s.pollPool.release(n)
		s.alarm.claiming()
		now := s.now()
		cs, err := s.claimShards(ctx, lifecycle.WorkExpire, allShards, now, n)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if time.Since(lastErr) > 10*time.Second {
				lastErr = time.Now()
				s.log.Warn("expiry poller", "err", err.Error())
			}
			cs = nil // sleep a full interval and try again
		}
		var next time.Time
		full := false
		var ids []string
		for _, c := range cs {
			for _, id := range c.ids {
				if _, err := s.pollPool.acquire(ctx, 1); err != nil {
					return // the lease brings the rest back
				}
				s.pollPool.goRun(func() { s.runClaimed(s.workCtx, "poller", lifecycle.WorkExpire, c.shard, id, c.leaseEnd) })
			}
			ids = append(ids, c.ids...)
			full = full || len(c.ids) == n
			if !c.next.IsZero() && (next.IsZero() || c.next.Before(next)) {
				next = c.next
			}
		}
		if s.hooks.polled != nil {
			s.hooks.polled(ids)
		}
		if full {
			continue // perhaps more is due: claim again as workers free up
		}
		wait := s.cfg.PollInterval
		if !next.IsZero() {
			wait = min(wait, next.Sub(now))
		}
		wakeAt := s.alarm.sleepUntil(now.Add(wait).UnixMilli())
		timer.Reset(max(time.UnixMilli(wakeAt).Sub(now), time.Millisecond))
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-s.alarm.wake:
			timer.Stop() // Go 1.23 timers: no stale tick after Stop
		}
	}
}
