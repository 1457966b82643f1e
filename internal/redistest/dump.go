package redistest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Keys returns every key that matches pattern, sorted, on every master of
// a cluster (SCAN, never KEYS).
func Keys(ctx context.Context, rdb redis.UniversalClient, pattern string) ([]string, error) {
	var (
		mu  sync.Mutex
		out []string
	)
	scan := func(ctx context.Context, c *redis.Client) error {
		iter := c.Scan(ctx, 0, pattern, 1000).Iterator()
		for iter.Next(ctx) {
			mu.Lock()
			out = append(out, iter.Val())
			mu.Unlock()
		}
		return iter.Err()
	}
	var err error
	switch c := rdb.(type) {
	case *redis.ClusterClient:
		err = c.ForEachMaster(ctx, scan)
	case *redis.Client:
		err = scan(ctx, c)
	default:
		return nil, fmt.Errorf("keys: unsupported client %T", rdb)
	}
	if err != nil {
		return nil, fmt.Errorf("scan %s: %w", pattern, err)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// Snapshot returns every key that matches pattern with its serialized
// value (DUMP): equal snapshots mean Redis holds the same data there.
func Snapshot(ctx context.Context, rdb redis.UniversalClient, pattern string) (map[string]string, error) {
	keys, err := Keys(ctx, rdb, pattern)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(keys))
	for _, k := range keys {
		v, err := rdb.Dump(ctx, k).Result()
		if errors.Is(err, redis.Nil) {
			continue // gone meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("dump %s: %w", k, err)
		}
		out[k] = v
	}
	return out, nil
}

// Contents renders every key that matches pattern, with its value, as
// text: one line per key, every member, field and stream entry included.
// Tests search it for data that must not be in Redis.
func Contents(ctx context.Context, rdb redis.UniversalClient, pattern string) (string, error) {
	keys, err := Keys(ctx, rdb, pattern)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s =", k)
		switch typ := rdb.Type(ctx, k).Val(); typ {
		case "string":
			fmt.Fprintf(&b, " %s", rdb.Get(ctx, k).Val())
		case "zset":
			for _, z := range rdb.ZRangeWithScores(ctx, k, 0, -1).Val() {
				fmt.Fprintf(&b, " %v:%v", z.Member, z.Score)
			}
		case "stream":
			for _, m := range rdb.XRange(ctx, k, "-", "+").Val() {
				fmt.Fprintf(&b, " %s:%v", m.ID, m.Values)
			}
			for _, g := range rdb.XInfoGroups(ctx, k).Val() {
				fmt.Fprintf(&b, " group:%s", g.Name)
			}
		case "set":
			fmt.Fprintf(&b, " %v", rdb.SMembers(ctx, k).Val())
		case "hash":
			fmt.Fprintf(&b, " %v", rdb.HGetAll(ctx, k).Val())
		case "list":
			fmt.Fprintf(&b, " %v", rdb.LRange(ctx, k, 0, -1).Val())
		case "none":
		default:
			return "", fmt.Errorf("key %s has unexpected type %s", k, typ)
		}
		b.WriteByte('\n')
	}
	return b.String(), nil
}
