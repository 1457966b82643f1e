package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/robfig/cron/v3"

	"github.com/sessiond/sessiond/internal/keyspace"
	"github.com/sessiond/sessiond/lifecycle"
)

// Config configures a Scheduler. Zero values mean the documented defaults.
type Config struct {
	// SweepEvery is the period of the cron sweep, aligned to wall-clock
	// multiples so that replicas tick together; default 1m. Negative turns
	// the sweep off (tests of the other paths only).
	SweepEvery time.Duration
	// SweepBatch is how many ids one claim takes per shard; default 500,
	// which keeps every claim well under a millisecond.
	SweepBatch int
	// PollInterval is the longest the expiry poller sleeps between claims
	// (it sleeps less when the next expiry is sooner, and its replica's
	// Alarm wakes it for sooner work); it bounds how late an expiry set by
	// another replica can be seen. Default 2s. Negative turns the poller
	// off: expiry then waits for the sweep.
	PollInterval time.Duration
	// Lease is how long a claim holds an id; an id whose claimer died comes
	// due again after it. Default 5s.
	Lease time.Duration
	// Concurrency is how many Runs the poller, and separately the sweeps,
	// have in flight; default 16. Each Run holds one connection of the
	// lifecycle's Redis pool, so keep it well below that pool's size.
	Concurrency int
	// ScheduleTimeout bounds one sweep enqueue; default 1s.
	ScheduleTimeout time.Duration
	// ShutdownTimeout is the most Asynq waits for a running sweep when
	// Shutdown's context has no earlier deadline; default 10s.
	ShutdownTimeout time.Duration
	// Queue is the Asynq queue of the sweeps; default the key space's
	// maintenance queue.
	Queue string
	// Tasks is a second client of the same Redis for Asynq, with a pool of
	// its own; nil lets Asynq share rdb. The caller closes it.
	Tasks redis.UniversalClient

	// Now is the clock every due decision uses; default time.Now. It must
	// be the lifecycle service's clock. (The cron ticks follow the wall
	// clock: they only trigger sweeps.)
	Now    func() time.Time
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.SweepEvery, time.Minute)
	def(&c.PollInterval, 2*time.Second)
	def(&c.Lease, 5*time.Second)
	def(&c.ScheduleTimeout, time.Second)
	def(&c.ShutdownTimeout, 10*time.Second)
	if c.SweepBatch <= 0 {
		c.SweepBatch = 500
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 16
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Service is what the scheduler drives: *lifecycle.Service.
type Service interface {
	// Run does one piece of timed work if it is due by the service's clock
	// and reports whether it changed anything; it is idempotent.
	Run(ctx context.Context, kind lifecycle.WorkKind, id string) (bool, error)
	// DueKey is the due index of kind in shard sh.
	DueKey(sh keyspace.Shard, kind lifecycle.WorkKind) string
}

// Scheduler runs timed work; see the package documentation. Start and
// Shutdown follow the daemon's part contract: Shutdown without Start, or
// twice, does nothing.
type Scheduler struct {
	cfg   Config
	rdb   redis.UniversalClient // the lifecycle's: claims and releases
	svc   Service
	alarm *Alarm
	log   *slog.Logger
	queue string

	tasksRDB redis.UniversalClient // Asynq's pool
	client   *asynq.Client

	pollPool  *pool
	sweepPool *pool
	handlers  sync.WaitGroup // task handlers in flight

	mu         sync.Mutex
	state      int
	workCtx    context.Context // every Run and task handler; cancelled at Shutdown's deadline
	cancelWork context.CancelFunc
	stopPoll   context.CancelFunc
	pollDone   chan struct{}
	srv        *asynq.Server
	cron       *cron.Cron

	hooks hooks
}

const (
	stateNew = iota
	stateRunning
	stateStopped
)

// New returns a Scheduler that runs svc's timed work, claiming from the due
// indexes in rdb, the Redis the lifecycle uses; alarm is the lifecycle's
// Timer (nil: the poller only wakes on its own).
func New(rdb redis.UniversalClient, svc Service, alarm *Alarm, cfg Config) *Scheduler {
	cfg.setDefaults()
	tasksRDB := cfg.Tasks
	if tasksRDB == nil {
		tasksRDB = rdb
	}
	if alarm == nil {
		alarm = NewAlarm()
	}
	queue := cfg.Queue
	if queue == "" {
		queue = keyspace.New("").MaintenanceQueue()
	}
	return &Scheduler{
		cfg:       cfg,
		rdb:       rdb,
		svc:       svc,
		alarm:     alarm,
		log:       cfg.Logger,
		queue:     queue,
		tasksRDB:  tasksRDB,
		client:    asynq.NewClientFromRedisClient(tasksRDB),
		pollPool:  newPool(cfg.Concurrency),
		sweepPool: newPool(cfg.Concurrency),
	}
}

// now is the injected clock.
func (s *Scheduler) now() time.Time { return s.cfg.Now() }

// Start starts the Asynq server of the sweeps, the poller and the cron.
// ctx only carries values: the scheduler runs until Shutdown.
func (s *Scheduler) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.state {
	case stateRunning:
		return errors.New("start scheduler: already started")
	case stateStopped:
		return errors.New("start scheduler: already shut down")
	}
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("start scheduler: %w", err)
	}
	s.workCtx, s.cancelWork = context.WithCancel(context.WithoutCancel(ctx))

	s.srv = asynq.NewServerFromRedisClient(s.tasksRDB, asynq.Config{
		Concurrency:     2,
		Queues:          map[string]int{s.queue: 1},
		BaseContext:     func() context.Context { return s.workCtx },
		ShutdownTimeout: s.cfg.ShutdownTimeout,
		// Sweeps are enqueued to run at once; nothing is scheduled, so
		// the forwarder can look rarely. An idle server looks at its
		// queue once a second: a sweep runs within a second of its tick.
		DelayedTaskCheckInterval: 5 * time.Second,
		TaskCheckInterval:        time.Second,
		Logger:                   asynqLogger{s.log},
		LogLevel:                 asynq.WarnLevel,
	})
	mux := asynq.NewServeMux()
	mux.HandleFunc(typeSweep, s.handleSweep)
	if err := s.srv.Start(mux); err != nil {
		s.cancelWork()
		return fmt.Errorf("start scheduler: %w", err)
	}

	pollCtx, stopPoll := context.WithCancel(s.workCtx)
	s.stopPoll, s.pollDone = stopPoll, make(chan struct{})
	if s.cfg.PollInterval > 0 {
		go s.poll(pollCtx)
	} else {
		close(s.pollDone)
	}

	s.cron = cron.New(cron.WithLogger(cronLogger{s.log}), cron.WithChain(cron.Recover(cronLogger{s.log})))
	if s.cfg.SweepEvery > 0 {
		s.cron.Schedule(aligned{s.cfg.SweepEvery}, cron.FuncJob(s.tick))
	}
	s.cron.Start()
	s.state = stateRunning
	return nil
}

// Shutdown stops the scheduler: first the producers (the cron sweep, then
// the poller, whose in-flight Runs finish), then the Asynq server (a
// running sweep finishes). At ctx's deadline the work still running is
// cancelled: claimed ids come due again when their lease ends, so nothing
// is lost. Shutdown returns once every goroutine the scheduler started has
// ended. Shutdown before Start, or a second Shutdown, does nothing.
func (s *Scheduler) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == stateStopped {
		return nil
	}
	wasRunning := s.state == stateRunning
	s.state = stateStopped
	if wasRunning {
		s.stop(ctx)
	}
	return nil
}

// stop stops what Start started, in order.
func (s *Scheduler) stop(ctx context.Context) {
	stop := context.AfterFunc(ctx, s.cancelWork)
	defer stop()

	<-s.cron.Stop().Done() // a tick in progress finishes its enqueue
	s.stopPoll()
	<-s.pollDone
	s.pollPool.wait()

	// Asynq fixes its own ShutdownTimeout when it is built; cancelling the
	// handlers' base context at ctx's deadline makes ctx the bound.
	s.srv.Stop()
	s.srv.Shutdown()
	s.cancelWork() // a handler Asynq gave up on stops now
	s.handlers.Wait()
	s.sweepPool.wait()
}

// hooks let tests watch the scheduler instead of sleeping. Tests set them
// before Start; nil ones are skipped.
type hooks struct {
	polled func(claimed []string)                                          // after each poller claim
	ran    func(src string, k lifecycle.WorkKind, id string, changed bool) // after each Run
	ticked func(tick time.Time, enqueued bool)                             // a cron tick tried to enqueue its sweep
	swept  func(tick time.Time)                                            // a sweep finished
}
