package main

import (
	"context"
	"log/slog"

	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/lifecycle"
	"github.com/sessiond/sessiond/scheduler"
)

// schedulerPart wires the scheduler into the daemon: it is the lifecycle's
// Timer from the start (so every change schedules its timed work), and it
// runs expiry, redaction, purge and the sweeps once started.
type schedulerPart struct {
	sched *scheduler.Scheduler
}

// newScheduler builds the scheduler on the daemon's Redis client; Asynq
// shares that client's pool, so the URL is not needed again.
func newScheduler(cfg Config, _ string, rdb redis.UniversalClient, logger *slog.Logger) (*schedulerPart, error) {
	return &schedulerPart{sched: scheduler.New(rdb, scheduler.Config{
		SweepEvery:      cfg.SweepEvery,
		ShutdownTimeout: cfg.ShutdownTimeout,
		Logger:          logger.With("component", "scheduler"),
	})}, nil
}

// timer is what the lifecycle tells of timed work.
func (s *schedulerPart) timer() lifecycle.Timer { return s.sched }

// withService hands the scheduler the lifecycle it drives.
func (s *schedulerPart) withService(svc *lifecycle.Service) part {
	s.sched.Drive(svc)
	return s
}

func (s *schedulerPart) Start(ctx context.Context) error    { return s.sched.Start(ctx) }
func (s *schedulerPart) Shutdown(ctx context.Context) error { return s.sched.Shutdown(ctx) }
