package main

import (
	"context"
	"log/slog"

	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/lifecycle"
)

// dispatcherPart wires the webhook dispatcher into the daemon.
// TODO(dispatcher issue): replace with the real dispatcher.
type dispatcherPart struct{}

func newDispatcher(cfg Config, redisURL string, rdb redis.UniversalClient, svc *lifecycle.Service, api *lifecycle.API, logger *slog.Logger) (*dispatcherPart, error) {
	return &dispatcherPart{}, nil
}

func (d *dispatcherPart) Start(ctx context.Context) error    { return nil }
func (d *dispatcherPart) Shutdown(ctx context.Context) error { return nil }
