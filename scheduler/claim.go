package scheduler

import (
	"context"
	_ "embed"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/lifecycle"
)

var (
	//go:embed scripts/claim.lua
	claimSource string
	claimScript = redis.NewScript(claimSource)

	//go:embed scripts/release.lua
	releaseSource string
	releaseScript = redis.NewScript(releaseSource)
)

// claimed is the outcome of one claim.
type claimed struct {
	ids      []string
	leaseEnd int64     // unix ms the claimed ids are leased until
	next     time.Time // lowest score left in the index; zero when empty
}

// claim leases up to limit ids of kind that are due at now.
func (s *Scheduler) claim(ctx context.Context, k lifecycle.WorkKind, now time.Time, limit int) (claimed, error) {
	c := claimed{leaseEnd: now.Add(s.cfg.Lease).UnixMilli()}
	res, err := claimScript.Run(ctx, s.rdb, []string{dueKey(k)},
		now.UnixMilli(), c.leaseEnd, limit).StringSlice()
	if err != nil {
		return claimed{}, fmt.Errorf("claim %s: %w", k, err)
	}
	if len(res) == 0 {
		return claimed{}, fmt.Errorf("claim %s: empty reply", k)
	}
	if res[0] != "" {
		ms, err := strconv.ParseFloat(res[0], 64)
		if err != nil {
			return claimed{}, fmt.Errorf("claim %s: next score %q: %w", k, res[0], err)
		}
		c.next = time.UnixMilli(int64(ms))
	}
	c.ids = res[1:]
	return c, nil
}

// release drops ids claimed until leaseEnd from kind's due index unless a
// lifecycle write rescheduled them meanwhile.
func (s *Scheduler) release(ctx context.Context, k lifecycle.WorkKind, leaseEnd int64, ids ...string) error {
	args := make([]any, 0, len(ids)+1)
	args = append(args, leaseEnd)
	for _, id := range ids {
		args = append(args, id)
	}
	if err := releaseScript.Run(ctx, s.rdb, []string{dueKey(k)}, args...).Err(); err != nil {
		return fmt.Errorf("release %s: %w", k, err)
	}
	return nil
}

// runClaimed runs one claimed id. When Run changes nothing the work was
// done by another path (a task, a read, a sweep) or is stale, and the
// claim is released; when Run fails the lease brings the id back.
func (s *Scheduler) runClaimed(ctx context.Context, src string, k lifecycle.WorkKind, id string, leaseEnd int64) bool {
	changed, err := s.svc.Run(ctx, k, id)
	if err != nil {
		s.log.Warn("timed work failed; retried when its lease ends", "source", src, "kind", string(k), "session_id", id, "err", err.Error())
		return false
	}
	if !changed {
		if err := s.release(ctx, k, leaseEnd, id); err != nil {
			s.log.Warn("release claim", "kind", string(k), "session_id", id, "err", err.Error())
		}
	}
	if s.hooks.ran != nil {
		s.hooks.ran(src, k, id, changed)
	}
	return changed
}
