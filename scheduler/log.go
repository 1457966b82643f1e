package scheduler

import (
	"context"
	"fmt"
	"log/slog"
)

// asynqLogger writes Asynq's log lines to slog.
type asynqLogger struct{ l *slog.Logger }

func (a asynqLogger) Debug(args ...any) { a.l.Debug(fmt.Sprint(args...), "library", "asynq") }
func (a asynqLogger) Info(args ...any)  { a.l.Info(fmt.Sprint(args...), "library", "asynq") }
func (a asynqLogger) Warn(args ...any)  { a.l.Warn(fmt.Sprint(args...), "library", "asynq") }
func (a asynqLogger) Error(args ...any) { a.l.Error(fmt.Sprint(args...), "library", "asynq") }

// Fatal logs at error level: Asynq never calls it, and a library does not
// end the process.
func (a asynqLogger) Fatal(args ...any) { a.Error(args...) }

// cronLogger writes robfig/cron's log lines to slog; its chatty info lines
// (every wake-up) go to debug.
type cronLogger struct{ l *slog.Logger }

func (c cronLogger) Info(msg string, kv ...any) {
	c.l.Log(context.Background(), slog.LevelDebug, msg, append(kv, "component", "cron")...)
}

func (c cronLogger) Error(err error, msg string, kv ...any) {
	c.l.Error(msg, append(kv, "component", "cron", "err", err.Error())...)
}
