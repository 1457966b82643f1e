package main

import (
	"context"
	"log/slog"

	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/lifecycle"
)

// schedulerPart wires the scheduler into the daemon.
// TODO(scheduler issue): replace with the real scheduler.
type schedulerPart struct{}

func newScheduler(cfg Config, redisURL string, rdb redis.UniversalClient, logger *slog.Logger) (*schedulerPart, error) {
	return &schedulerPart{}, nil
}

// timer is what the lifecycle tells of timed work.
func (s *schedulerPart) timer() lifecycle.Timer { return nil }

// withService hands the scheduler the lifecycle it drives.
func (s *schedulerPart) withService(svc *lifecycle.Service) part { return s }

func (s *schedulerPart) Start(ctx context.Context) error    { return nil }
func (s *schedulerPart) Shutdown(ctx context.Context) error { return nil }
