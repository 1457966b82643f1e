package adminapi

import (
	"context"
	_ "embed"
	"fmt"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
)

// RateWindow allows Limit requests in any Window.
type RateWindow struct {
	Limit  int
	Window time.Duration
}

//go:embed scripts/ratelimit.lua
var rateLimitSource string

var rateLimitScript = redis.NewScript(rateLimitSource)

// reserve takes one request of client's named limit, or refuses it with 429
// and the time until it would fit. Call the returned release if the request
// then fails: only requests that succeed use up quota.
func (a *API) reserve(ctx context.Context, name, client string, windows []RateWindow) (release func(), err error) {
	if len(windows) == 0 {
		return func() {}, nil
	}
	key, member := a.keys.RateLimit(name, client), uuid.NewString()
	args := []any{a.now().UnixMilli(), member}
	for _, w := range windows {
		args = append(args, w.Limit, w.Window.Milliseconds())
	}
	wait, err := rateLimitScript.Run(ctx, a.rdb, []string{key}, args...).Int64()
	if err != nil {
		return nil, fmt.Errorf("rate limit %s: %w", name, err)
	}
	if wait > 0 {
		return nil, &Error{Status: http.StatusTooManyRequests, Code: CodeTooManyRequests,
			Message: "Too many requests.", RetryAfter: time.Duration(wait) * time.Millisecond}
	}
	return func() {
		if err := a.rdb.ZRem(context.WithoutCancel(ctx), key, member).Err(); err != nil {
			a.log.Warn("rate limit: give back quota", "err", err.Error())
		}
	}, nil
}
