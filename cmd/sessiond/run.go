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
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/sessiond/sessiond/adminapi"
	"github.com/sessiond/sessiond/lifecycle"
)

// run is the whole daemon: it builds the parts in order, serves until ctx is
// done or SIGINT/SIGTERM arrives, then stops them in reverse order.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
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

	// Redis: the configured one, or a private child for local runs.
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
	opts, err := redis.ParseURL(redisURL)
	if err != nil {
		return fmt.Errorf("redis url: %w", err)
	}
	// Maintenance notifications are a Redis Enterprise feature; off, the
	// options can be copied for the scheduler's and dispatcher's own pools.
	opts.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	rdb := redis.NewClient(opts)
	defer rdb.Close()

	// Operators: metrics in a private registry, read from Redis through a
	// client of their own with short timeouts; the queue UI (closed after
	// the admin server, by defer).
	scrapeRDB := scrapeClient(opts)
	defer scrapeRDB.Close()
	reg := newRegistry(scrapeRDB, logger)
	metrics := newMetrics(reg, endpointIDs(cfg.Webhook.Endpoints))
	ui, closeUI := newUI(asynqRedis{opts: opts}, cfg.UIUser, cfg.UIPassword)
	defer func() {
		if err := closeUI(); err != nil {
			logger.Warn("close ui", "err", err.Error())
		}
	}()

	// Timed work: the scheduler is the lifecycle's timer, so it comes first
	// and starts once the lifecycle exists.
	sched, err := newScheduler(cfg, redisURL, rdb, logger)
	if err != nil {
		return err
	}
	svc := lifecycle.New(rdb, lifecycle.Config{
		SessionTTL:      cfg.SessionTTL,
		TokenTTL:        cfg.TokenTTL,
		PurgeAfter:      cfg.PurgeAfter,
		Retention:       cfg.Retention,
		EventsRetention: cfg.EventsRetention,
		Timer:           sched.timer(),
		Observer:        metrics,
		Logger:          logger,
	})
	disp, err := newDispatcher(cfg, redisURL, metrics, logger)
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
		Observer:    metrics,
		Logger:      logger,
	}, svc, disp.d, rdb)
	if err != nil {
		return err
	}
	// Parts stop in the order listed: producers (scheduler) before workers
	// (dispatcher). Shutdown tolerates parts that never started, so a
	// failed start stops them all.
	parts := []part{sched.withService(svc), disp}
	stopParts := func(ctx context.Context) {
		for _, p := range parts {
			if err := p.Shutdown(ctx); err != nil {
				logger.Warn("shutdown", "err", err.Error())
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
	}
	logger.Info("stopped")
	return nil
}

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
