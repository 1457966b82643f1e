// Command sessiond is the verification-session daemon: it serves the admin
// API, runs timed work and delivers webhooks. See README.md.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/redis/go-redis/v9"
)

func main() {
	// go-redis reports connection trouble through a process-wide logger;
	// make it a JSON line like every other. Set here, once, not in run,
	// which tests call many times in parallel.
	redis.SetLogger(redisLogger{slog.New(slog.NewJSONHandler(os.Stdout, &slog.HandlerOptions{Level: redisLogLevel(os.Getenv)}))})
	if err := run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "sessiond: %v\n", err)
		os.Exit(1)
	}
}

// redisLogger adapts go-redis's printf logger to slog. go-redis logs
// trouble (failed lookups, bad connections) and a few facts (which
// sentinel and master it found); the facts are not warnings.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	level := slog.LevelWarn
	switch {
	case strings.HasSuffix(msg, "context canceled"):
		// The failover client asks every sentinel at once and cancels the
		// others when one answers.
		level = slog.LevelDebug
	case strings.HasPrefix(format, "sentinel: selected addr"), strings.HasPrefix(format, "sentinel: discovered new sentinel"):
		level = slog.LevelDebug
	case strings.HasPrefix(format, "sentinel: new master"), strings.HasPrefix(format, "cluster: slots"),
		strings.HasPrefix(format, "pubsub: reconnecting"):
		level = slog.LevelInfo
	}
	l.log.Log(ctx, level, "redis client", "detail", msg)
}

// redisLogLevel is SESSIOND_LOG_LEVEL for go-redis's process-wide logger
// (info when unset or invalid: LoadConfig reports a bad value).
func redisLogLevel(getenv func(string) string) slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(getenv("SESSIOND_LOG_LEVEL"))); err != nil {
		return slog.LevelInfo
	}
	return l
}
