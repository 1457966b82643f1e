package lifecycle

import (
	"context"
	_ "embed"
	"fmt"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
)

//go:embed scripts/ratelimit.lua
var rateLimitSource string

var rateLimitScript = redis.NewScript(rateLimitSource)

// allow records one request of client against the named limit, or refuses
// it with 429 and the time until it would fit.
func (a *API) allow(ctx context.Context, name, client string, windows []RateWindow) error {
	if len(windows) == 0 {
		return nil
	}
	args := []any{a.svc.now().UnixMilli(), uuid.NewString()}
	for _, w := range windows {
		args = append(args, w.Limit, w.Window.Milliseconds())
	}
	wait, err := rateLimitScript.Run(ctx, a.svc.rdb, []string{rateKey(name, client)}, args...).Int64()
	if err != nil {
		return fmt.Errorf("rate limit %s: %w", name, err)
	}
	if wait > 0 {
		return &Error{Status: http.StatusTooManyRequests, Code: CodeTooManyRequests,
			Message: "Too many requests.", RetryAfter: time.Duration(wait) * time.Millisecond}
	}
	return nil
}
