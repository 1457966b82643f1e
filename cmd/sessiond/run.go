package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/adminapi"
	"github.com/sessiond/sessiond/dispatcher"
	"github.com/sessiond/sessiond/internal/keyspace"
	"github.com/sessiond/sessiond/internal/redisconn"
	"github.com/sessiond/sessiond/lifecycle"
	"github.com/sessiond/sessiond/scheduler"
)

// run is the whole daemon: it builds the parts in order, serves until ctx is
// done or SIGINT/SIGTERM arrives, then stops them in reverse order.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var closers []io.Closer // Redis clients, closed last
	// stuck says a part was still stopping when run gave up on it: its
	// goroutines (Asynq's among them) may still use the Redis clients, and
	// closing those under them makes Asynq's pubsub goroutine panic on a
	// closed channel. The process is about to exit; they are left open.
	var stuck atomic.Bool
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	fs := flag.NewFlagSet("sessiond", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "path to the YAML configuration file (optional)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := LoadConfig(*configPath, getenv)
	if err != nil {
		return err
	}
	logger := newLogger(stdout, cfg.LogLevel)
	logger.Info("starting sessiond", "config", cfg)

	// Redis: the configured one, or a private child for local runs. Every
	// client comes from conn, with the URL's credentials and TLS; each part
	// gets a pool of its own, closed after every part has stopped.
	redisURL := cfg.RedisURL
	if redisURL == "" {
		url, stopRedis, err := startLocalRedis(ctx, logger)
		if err != nil {
			return err
		}
		defer func() {
			if err := stopRedis(); err != nil {
				logger.Warn("stop local redis", "err", err.Error())
			}
		}()
		redisURL = url
	}
	conn, err := redisconn.Parse(redisURL, redisconn.Options{CAFile: cfg.RedisCAFile})
	if err != nil {
		return err
	}
	logger.Info("redis", "url", conn.String(), "topology", string(conn.Topology()))
	newClient := func(p redisconn.Pool) redis.UniversalClient {
		c := conn.Client(p)
		closers = append(closers, c)
		return c
	}
	defer func() {
		if stuck.Load() {
			return
		}
		for _, c := range closers {
			_ = c.Close()
		}
	}()
	rdb := newClient(redisconn.Pool{Name: "sessiond", Size: storePoolSize})

	// Operators: metrics in a private registry, read from Redis through a
	// small pool of their own that fails fast; the queue UI.
	reg := newRegistry(newClient(metricsPool), keyspace.New(""), logger)
	metrics := newMetrics(reg, endpointIDs(cfg.Webhook.Endpoints))
	uiCfg := uiConfig{User: cfg.UIUser, Password: cfg.UIPassword, ReadOnly: cfg.UIReadOnly}
	ui, closeUI := newUI(conn.Asynq(redisconn.Pool{Name: "sessiond-ui", Size: 4}), uiCfg)
	logger.Info("queue ui", "path", uiRoot+"/", "mode", uiCfg.mode())
	var debug http.Handler
	if cfg.Pprof {
		debug = newPprof(uiCfg)
		logger.Info("profiles", "path", "/debug/pprof/", "basic_auth", uiCfg.Password != "")
	}
	defer func() {
		if err := closeUI(); err != nil {
			logger.Warn("close ui", "err", err.Error())
		}
	}()

	// The sessions; the alarm wakes the expiry poller when a change sets a
	// sooner expiry.
	alarm := scheduler.NewAlarm()
	svc := lifecycle.New(rdb, lifecycle.Config{
		SessionTTL:      cfg.SessionTTL,
		TokenTTL:        cfg.TokenTTL,
		PurgeAfter:      cfg.PurgeAfter,
		PurgeLead:       2 * cfg.SweepEvery,
		Retention:       cfg.Retention,
		RecordRetention: cfg.RecordRetention,
		EventsRetention: cfg.EventsRetention,
		MinReplicas:     cfg.MinReplicas,
		Timer:           alarm,
		Observer:        metrics,
		Logger:          logger,
	})
	sched := scheduler.New(rdb, svc, alarm, scheduler.Config{
		SweepEvery:      cfg.SweepEvery,
		ShutdownTimeout: cfg.ShutdownTimeout,
		Tasks:           newClient(redisconn.Pool{Name: "sessiond-scheduler", Size: 4}),
		Logger:          logger.With("component", "scheduler"),
	})
	disp, err := dispatcher.New(newClient(redisconn.Pool{Name: "sessiond-dispatcher", Size: dispatcherConcurrency + 32}), svc, dispatcher.Config{
		Endpoints:     dispatcherEndpoints(cfg.Webhook.Endpoints),
		APIKey:        webhookAPIKey(cfg.Clients),
		Timeout:       cfg.Webhook.Timeout,
		RetrySchedule: cfg.Webhook.RetrySchedule,
		AllowNetworks: cfg.Webhook.AllowNetworks,
		Concurrency:   dispatcherConcurrency,
		Retention:     cfg.EventsRetention,
		QueueRedis:    newClient(redisconn.Pool{Name: "sessiond-webhooks", Size: 32}),
		Metrics:       metrics,
		Logger:        logger.With("component", "dispatcher"),
	})
	if err != nil {
		return err
	}
	var draining atomic.Bool
	api, err := adminapi.New(adminapi.Config{
		Clients:     apiClients(cfg.Clients),
		DeleteLimit: rateWindows(cfg.DeleteLimit),
		Ready:       ready(rdb, &draining),
		Metrics:     handleMetrics(reg, logger),
		UI:          ui,
		Debug:       debug,
		Observer:    metrics,
		Logger:      logger,
	}, svc, disp, rdb)
	if err != nil {
		return err
	}
	// Parts stop in the order listed: producers (scheduler) before workers
	// (dispatcher). Shutdown tolerates parts that never started, so a
	// failed start stops them all. Past ctx's deadline stopParts returns
	// even if a part is still waiting on Redis: what it left is redone by
	// the next process.
	parts := []part{sched, disp}
	stopParts := func(ctx context.Context) {
		done := make(chan struct{})
		go func() {
			defer close(done)
			for _, p := range parts {
				if err := p.Shutdown(ctx); err != nil {
					logger.Warn("shutdown", "err", err.Error())
				}
			}
		}()
		select {
		case <-done:
		case <-ctx.Done():
			select {
			case <-done:
			case <-time.After(shutdownGrace):
				stuck.Store(true)
				logger.Warn("shutdown deadline passed with work still stopping; it is left to the next process")
			}
		}
	}
	abort := func(err error) error {
		ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer cancel()
		stopParts(ctx)
		return err
	}
	// Listen before starting anything, so a taken port fails fast.
	ln, err := net.Listen("tcp", cfg.AdminAddr)
	if err != nil {
		return fmt.Errorf("admin listener: %w", err)
	}
	defer ln.Close()
	for _, p := range parts {
		if err := p.Start(ctx); err != nil {
			return abort(err)
		}
	}

	srv := &http.Server{
		Handler:           api,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	logger.Info("admin api listening", "addr", ln.Addr().String())

	select {
	case <-ctx.Done():
		logger.Info("shutting down")
	case err := <-serveErr:
		return abort(fmt.Errorf("admin server: %w", err))
	}

	// Stop in reverse order: not ready first, so a load balancer stops
	// sending; then the parts, producers (scheduler) before workers
	// (dispatcher), each cut off at the shutdown timeout with what was
	// unfinished left for the next process; then the admin server. ctx is
	// already done, so the stops get a fresh timeout. During the drain
	// delay everything still works; only /readyz says 503. A second signal
	// ends the process at once.
	draining.Store(true)
	stop()
	if cfg.DrainDelay > 0 {
		logger.Info("draining: readyz reports 503", "drain_delay", shortDuration(cfg.DrainDelay))
		time.Sleep(cfg.DrainDelay)
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	stopParts(shutdownCtx)
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		logger.Warn("admin server shutdown", "err", err.Error())
		_ = srv.Close()
	}
	logger.Info("stopped")
	return nil
}

// Pool sizes and bounds.
const (
	// storePoolSize: the admin API's requests in flight (64), the
	// scheduler's Runs (16 + 16) and the relay.
	storePoolSize = 128
	// dispatcherConcurrency is the number of deliveries in flight per process.
	dispatcherConcurrency = 100
	// shutdownGrace is how long past the shutdown timeout run waits for
	// the parts before it returns anyway.
	shutdownGrace = 500 * time.Millisecond
)

// part is a long-running piece of the daemon. Shutdown may be called
// without Start and more than once.
type part interface {
	Start(ctx context.Context) error
	Shutdown(ctx context.Context) error
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level)) // validated by LoadConfig
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l}))
}

// ready is /readyz's check: not draining, and Redis answers.
func ready(rdb redis.UniversalClient, draining *atomic.Bool) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		if draining.Load() {
			return errors.New("draining")
		}
		if err := rdb.Ping(ctx).Err(); err != nil {
			return errors.New("redis unreachable")
		}
		return nil
	}
}

// dispatcherEndpoints are the configured webhook endpoints.
func dispatcherEndpoints(eps []Endpoint) []dispatcher.Endpoint {
	out := make([]dispatcher.Endpoint, len(eps))
	for i, ep := range eps {
		out[i] = dispatcher.Endpoint{ID: ep.ID, URL: ep.URL, Secrets: ep.Secrets, Events: ep.Events, Disabled: ep.Disabled}
	}
	return out
}

// webhookAPIKey is sent as X-AUTH-CLIENT on webhooks: the first
// configured API client's key.
func webhookAPIKey(cs []Client) string {
	if len(cs) == 0 {
		return ""
	}
	return cs[0].Key
}

func apiClients(cs []Client) []adminapi.Client {
	out := make([]adminapi.Client, len(cs))
	for i, c := range cs {
		out[i] = adminapi.Client{Key: c.Key, Secrets: c.Secrets, Scheme: adminapi.Scheme(c.Signature)}
	}
	return out
}

func rateWindows(ws []RateWindow) []adminapi.RateWindow {
	out := make([]adminapi.RateWindow, len(ws))
	for i, w := range ws {
		out[i] = adminapi.RateWindow{Limit: w.Limit, Window: w.Window}
	}
	return out
}
