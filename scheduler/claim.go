package scheduler

import (
	"context"
	_ "embed"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/internal/keyspace"
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

// claimed is the outcome of one claim in one shard.
type claimed struct {
	shard    keyspace.Shard
	ids      []string
	leaseEnd int64     // unix ms the claimed ids are leased until
	next     time.Time // lowest score left in the index; zero when empty
}

// claimShards leases up to limit ids of kind that are due at now in each
// of shards, in one round trip (one per master on a cluster).
func (s *Scheduler) claimShards(ctx context.Context, k lifecycle.WorkKind, shards []keyspace.Shard, now time.Time, limit int) ([]claimed, error) {
	leaseEnd := now.Add(s.cfg.Lease).UnixMilli()
	for try := 0; ; try++ {
		p := s.rdb.Pipeline()
		cmds := make([]*redis.Cmd, len(shards))
		for i, sh := range shards {
			cmds[i] = claimScript.EvalSha(ctx, p, []string{s.svc.DueKey(sh, k)}, now.UnixMilli(), leaseEnd, limit)
		}
		_, err := p.Exec(ctx)
		if err != nil && try == 0 && redis.HasErrorPrefix(err, "NOSCRIPT") {
			if err := loadScripts(ctx, s.rdb); err != nil {
				return nil, err
			}
			continue
		}
		out := make([]claimed, len(shards))
		for i, c := range cmds {
			res, err := c.StringSlice()
			if err != nil {
				return nil, fmt.Errorf("claim %s: %w", k, err)
			}
			if len(res) == 0 {
				return nil, fmt.Errorf("claim %s: empty reply", k)
			}
			out[i] = claimed{shard: shards[i], leaseEnd: leaseEnd, ids: res[1:]}
			if res[0] != "" {
				ms, err := strconv.ParseFloat(res[0], 64)
				if err != nil {
					return nil, fmt.Errorf("claim %s: next score %q: %w", k, res[0], err)
				}
				out[i].next = time.UnixMilli(int64(ms))
			}
		}
		return out, nil
	}
}

// loadScripts loads the scheduler's scripts (after a Redis restart lost
// them); on a cluster, into every master.
func loadScripts(ctx context.Context, rdb redis.UniversalClient) error {
	for _, sc := range []*redis.Script{claimScript, releaseScript} {
		if err := sc.Load(ctx, rdb).Err(); err != nil {
			return fmt.Errorf("load scripts: %w", err)
		}
	}
	return nil
}

// release drops ids claimed until leaseEnd from kind's due index unless a
// lifecycle write rescheduled them meanwhile.
func (s *Scheduler) release(ctx context.Context, k lifecycle.WorkKind, sh keyspace.Shard, leaseEnd int64, ids ...string) error {
	args := make([]any, 0, len(ids)+1)
	args = append(args, leaseEnd)
	for _, id := range ids {
		args = append(args, id)
	}
	if err := releaseScript.Run(ctx, s.rdb, []string{s.svc.DueKey(sh, k)}, args...).Err(); err != nil {
		return fmt.Errorf("release %s: %w", k, err)
	}
	return nil
}

// runClaimed runs one claimed id. When Run changes nothing the work was
// done by another path (a read, a sweep) or is stale, and the claim is
// released; when Run fails the lease brings the id back.
func (s *Scheduler) runClaimed(ctx context.Context, src string, k lifecycle.WorkKind, sh keyspace.Shard, id string, leaseEnd int64) bool {
	changed, err := s.svc.Run(ctx, k, id)
	if err != nil {
		s.log.Warn("timed work failed; retried when its lease ends", "source", src, "kind", string(k), "session_id", id, "err", err.Error())
		return false
	}
	if !changed {
		if err := s.release(ctx, k, sh, leaseEnd, id); err != nil {
			s.log.Warn("release claim", "kind", string(k), "session_id", id, "err", err.Error())
		}
	}
	if s.hooks.ran != nil {
		s.hooks.ran(src, k, id, changed)
	}
	return changed
}
