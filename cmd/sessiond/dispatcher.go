package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/dispatcher"
)

// dispatcherPart wires the webhook dispatcher into the daemon: endpoints
// from the environment and the YAML file, and a Redis connection pool of
// its own sized for its workers.
type dispatcherPart struct {
	d   *dispatcher.Dispatcher
	rdb *redis.Client
}

// dispatcherConcurrency is the number of deliveries in flight per process.
const dispatcherConcurrency = 100

func newDispatcher(cfg Config, redisURL string, metrics dispatcher.Metrics, logger *slog.Logger) (*dispatcherPart, error) {
	opts, err := redis.ParseURL(redisURL)
	if err != nil {
		return nil, fmt.Errorf("redis url: %w", err)
	}
	// Workers, the relay's blocking read and its enqueues each hold a
	// connection.
	opts.PoolSize = dispatcherConcurrency + 64
	rdb := redis.NewClient(opts)

	eps := make([]dispatcher.Endpoint, len(cfg.Webhook.Endpoints))
	for i, ep := range cfg.Webhook.Endpoints {
		eps[i] = dispatcher.Endpoint{ID: ep.ID, URL: ep.URL, Secrets: ep.Secrets, Events: ep.Events, Disabled: ep.Disabled}
	}
	// X-AUTH-CLIENT on webhooks is the first configured API client's key.
	var apiKey string
	if len(cfg.Clients) > 0 {
		apiKey = cfg.Clients[0].Key
	}
	d, err := dispatcher.New(rdb, dispatcher.Config{
		Endpoints:     eps,
		APIKey:        apiKey,
		Timeout:       cfg.Webhook.Timeout,
		RetrySchedule: cfg.Webhook.RetrySchedule,
		AllowNetworks: cfg.Webhook.AllowNetworks,
		Concurrency:   dispatcherConcurrency,
		Retention:     cfg.EventsRetention,
		Metrics:       metrics,
		Logger:        logger.With("component", "dispatcher"),
	})
	if err != nil {
		_ = rdb.Close()
		return nil, err
	}
	return &dispatcherPart{d: d, rdb: rdb}, nil
}

func (p *dispatcherPart) Start(ctx context.Context) error { return p.d.Start(ctx) }

// Shutdown stops the dispatcher (deliveries in flight may finish until
// ctx's deadline), then closes its Redis pool. It may be called twice.
func (p *dispatcherPart) Shutdown(ctx context.Context) error {
	err := p.d.Shutdown(ctx)
	if cerr := p.rdb.Close(); cerr != nil && !errors.Is(cerr, redis.ErrClosed) {
		err = errors.Join(err, cerr)
	}
	return err
}
