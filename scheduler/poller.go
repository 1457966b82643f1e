package scheduler

import (
	"context"
	"time"

	"github.com/sessiond/sessiond/lifecycle"
)

// poll is the expiry poller: it claims due ids from the expire index, as
// many as it has free workers, and runs them; then it sleeps until the next
// due time, at most PollInterval, or until Schedule brings earlier work.
// Several replicas poll the same index; the claim script gives each id to
// one of them.
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
		now := s.now()
		c, err := s.claim(ctx, lifecycle.WorkExpire, now, n)
		if err != nil {
			s.pollPool.release(n)
			if ctx.Err() != nil {
				return
			}
			if time.Since(lastErr) > 10*time.Second {
				lastErr = time.Now()
				s.log.Warn("expiry poller", "err", err.Error())
			}
			c = claimed{} // sleep a full interval and try again
		} else {
			s.pollPool.release(n - len(c.ids))
			for _, id := range c.ids {
				s.pollPool.goRun(func() { s.runClaimed(s.workCtx, "poller", lifecycle.WorkExpire, id, c.leaseEnd) })
			}
		}
		if s.hooks.polled != nil {
			s.hooks.polled(c.ids)
		}
		if err == nil && len(c.ids) == n {
			continue // perhaps more is due: claim again as workers free up
		}

		wait := s.cfg.PollInterval
		if !c.next.IsZero() {
			wait = min(wait, max(c.next.Sub(now), time.Millisecond))
		}
		s.nextWake.Store(now.Add(wait).UnixMilli())
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-s.wake:
			timer.Stop() // Go 1.23 timers: no stale tick after Stop
		}
	}
}
