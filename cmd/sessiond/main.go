// Command sessiond is the verification-session daemon: it serves the admin
// API, runs timed work and delivers webhooks. See README.md.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/redis/go-redis/v9"
)

func main() {
	// go-redis reports connection trouble through a process-wide logger;
	// make it a JSON line like every other. Set here, once, not in run,
	// which tests call many times in parallel.
	redis.SetLogger(redisLogger{slog.New(slog.NewJSONHandler(os.Stdout, nil))})
	if err := run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "sessiond: %v\n", err)
		os.Exit(1)
	}
}

// redisLogger adapts go-redis's printf logger to slog.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.WarnContext(ctx, "redis client", "detail", fmt.Sprintf(format, v...))
}
