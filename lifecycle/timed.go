package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// dueKeys maps each kind of timed work to its due index.
var dueKeys = map[WorkKind]string{
	WorkExpire: ExpireDueKey,
	WorkRedact: RedactDueKey,
	WorkPurge:  PurgeDueKey,
}

// Due returns up to limit session ids whose kind of work is due at now,
// earliest first.
func (s *Service) Due(ctx context.Context, kind WorkKind, now time.Time, limit int64) ([]string, error) {
	key, ok := dueKeys[kind]
	if !ok {
		return nil, fmt.Errorf("due: unknown work kind %q", kind)
	}
	ids, err := s.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{
		Key: key, Start: "-inf", Stop: strconv.FormatInt(now.UnixMilli(), 10),
		ByScore: true, Count: limit,
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("due %s: %w", kind, err)
	}
	return ids, nil
}

// NextDue returns when the earliest work of kind is due (UTC); ok is false
// when there is none.
func (s *Service) NextDue(ctx context.Context, kind WorkKind) (at time.Time, ok bool, err error) {
	key, known := dueKeys[kind]
	if !known {
		return time.Time{}, false, fmt.Errorf("next due: unknown work kind %q", kind)
	}
	zs, err := s.rdb.ZRangeWithScores(ctx, key, 0, 0).Result()
	if err != nil {
		return time.Time{}, false, fmt.Errorf("next due %s: %w", kind, err)
	}
	if len(zs) == 0 {
		return time.Time{}, false, nil
	}
	return time.UnixMilli(int64(zs[0].Score)).UTC(), true, nil
}

// Run does one piece of timed work if it is due; it reports whether it
// changed anything. It is idempotent: work that is not due, already done or
// superseded is left alone.
func (s *Service) Run(ctx context.Context, kind WorkKind, id string) (bool, error) {
	switch kind {
	case WorkExpire:
		return s.ExpireDue(ctx, id)
	case WorkRedact:
		return s.redactDue(ctx, id)
	case WorkPurge:
		return s.purge(ctx, id)
	}
	return false, fmt.Errorf("run: unknown work kind %q", kind)
}

// redactDue redacts a terminal session whose retention has ended.
func (s *Service) redactDue(ctx context.Context, id string) (bool, error) {
	due := func(r *record, now time.Time) bool {
		return r.Status.Terminal() && !now.Before(r.RetainFrom.Add(s.cfg.Retention))
	}
	m, err := s.mutate(ctx, id, false, redact(due))
	if errors.Is(err, ErrNotFound) {
		// Deleted or gone: nothing to redact; drop the stale entry.
		return false, s.rdb.ZRem(ctx, RedactDueKey, id).Err()
	}
	if err != nil {
		return false, fmt.Errorf("redact due session: %w", err)
	}
	return m.changed, nil
}

// purge removes every key of a session whose purge time has come.
func (s *Service) purge(ctx context.Context, id string) (bool, error) {
	purged := false
	err := s.atomically(ctx, []string{sessionKey(id)}, func(tx *redis.Tx, now time.Time) ([]*change, error) {
		purged = false
		raw, err := tx.Get(ctx, sessionKey(id)).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("read session: %w", err)
		}
		var r *record
		if err == nil {
			if r, err = decodeRecord(raw); err != nil {
				return nil, err
			}
			if at := s.purgeAt(r); now.Before(at) {
				// Not due (the session changed since): fix the index.
				return nil, tx.ZAdd(ctx, PurgeDueKey, redis.Z{Score: float64(at.UnixMilli()), Member: id}).Err()
			}
			if err := tx.Watch(ctx, refKey(r.RefID)).Err(); err != nil {
				return nil, fmt.Errorf("watch ref: %w", err)
			}
		}
		var owner, token string
		if r != nil {
			owner, _ = tx.Get(ctx, refKey(r.RefID)).Result()
			token = r.TokenHash
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Del(ctx, sessionKey(id), piiKey(id))
			if token != "" {
				p.Del(ctx, tokenKey(token))
			}
			for _, key := range dueKeys {
				p.ZRem(ctx, key, id)
			}
			if r != nil {
				m := indexMember(&r.Session)
				p.ZRem(ctx, allIndexKey, m)
				p.ZRem(ctx, refIndexKey(r.RefID), m)
				p.ZRem(ctx, statusIndexKey(r.Status), m)
				if owner == id {
					p.Del(ctx, refKey(r.RefID))
				}
			}
			return nil
		})
		purged = err == nil && r != nil
		return nil, err
	})
	if err != nil {
		return false, fmt.Errorf("purge session: %w", err)
	}
	return purged, nil
}
