package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/robfig/cron/v3"

	"github.com/sessiond/sessiond/lifecycle"
)

// Config configures a Scheduler. Zero values mean the documented defaults.
type Config struct {
	// SweepEvery is the period of the cron sweep, aligned to wall-clock
	// multiples so that replicas tick together; default 1m. Negative turns
	// the sweep off (tests of the other paths only).
	SweepEvery time.Duration
	// SweepBatch is how many ids one sweep claim takes; default 500, which
	// keeps every sweep command well under a millisecond.
	SweepBatch int
	// PollInterval is the longest the expiry poller sleeps between claims
	// (it sleeps less when the next expiry is sooner); default 50ms.
	// Negative turns the poller off: expiry then waits for the Asynq task,
	// which is up to a second plus DelayedTaskCheckInterval late.
	PollInterval time.Duration
	// Lease is how long a claim holds an id; an id whose claimer died comes
	// due again after it. Default 5s.
	Lease time.Duration
	// Concurrency is how many Runs the poller, and separately the sweeps,
	// have in flight; default 16. Each Run holds one connection of the
	// lifecycle's Redis pool, so keep it well below that pool's size.
	Concurrency int
	// TaskWorkers is the Asynq server's concurrency; default 10.
	TaskWorkers int
	// DelayedTaskCheckInterval is how often Asynq moves due tasks to their
	// queue; default 1s.
	DelayedTaskCheckInterval time.Duration
	// ScheduleTimeout bounds one Schedule (and one sweep enqueue); default 1s.
	ScheduleTimeout time.Duration
	// ShutdownTimeout is the most Asynq waits for running tasks when
	// Shutdown's context has no earlier deadline; default 10s.
	ShutdownTimeout time.Duration

	// Tasks is a second client of the same Redis for Asynq, with a pool of
	// its own (see the package invariants); nil lets Asynq share the
	// lifecycle's client. The caller closes it.
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
	def(&c.PollInterval, 50*time.Millisecond)
	def(&c.Lease, 5*time.Second)
	def(&c.DelayedTaskCheckInterval, time.Second)
	def(&c.ScheduleTimeout, time.Second)
	def(&c.ShutdownTimeout, 10*time.Second)
	if c.SweepBatch <= 0 {
		c.SweepBatch = 500
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 16
	}
	if c.TaskWorkers <= 0 {
		c.TaskWorkers = 10
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
}

// Scheduler runs timed work; see the package documentation. It is the
// lifecycle's Timer. Schedule may be called before Start; after Shutdown it
// does nothing (the due index holds the work for the other replicas). Start
// and Shutdown follow the daemon's part contract.
type Scheduler struct {
	cfg Config
	rdb redis.UniversalClient // the lifecycle's: claims and releases
	// tasksRDB is Asynq's pool. Schedule runs while the lifecycle holds
	// one of rdb's connections for its transaction; were the enqueue to
	// need another of rdb's, a burst of Runs could take them all and wait
	// on each other until ScheduleTimeout.
	tasksRDB  redis.UniversalClient
	client    *asynq.Client
	inspector *asynq.Inspector
	svc       Service
	log       *slog.Logger
	stopped   atomic.Bool // Shutdown has begun: Schedule does nothing

	pollPool  *pool
	sweepPool *pool
	handlers  sync.WaitGroup // task handlers in flight
	wake      chan struct{}  // nudges the poller when earlier work arrives
	nextWake  atomic.Int64   // when the poller means to claim next (unix ms)

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

// New returns a Scheduler that keeps its tasks in rdb, the Redis the
// lifecycle uses. Call Drive before Start.
func New(rdb redis.UniversalClient, cfg Config) *Scheduler {
	cfg.setDefaults()
	tasksRDB := cfg.Tasks
	if tasksRDB == nil {
		tasksRDB = rdb
	}
	return &Scheduler{
		cfg:       cfg,
		rdb:       rdb,
		tasksRDB:  tasksRDB,
		client:    asynq.NewClientFromRedisClient(tasksRDB),
		inspector: asynq.NewInspectorFromRedisClient(tasksRDB),
		log:       cfg.Logger,
		pollPool:  newPool(cfg.Concurrency),
		sweepPool: newPool(cfg.Concurrency),
		wake:      make(chan struct{}, 1),
	}
}

// Drive sets the service whose timed work the scheduler runs. The service
// is built with the scheduler as its Timer, so this comes after New and
// before Start.
func (s *Scheduler) Drive(svc Service) { s.svc = svc }

// now is the injected clock.
func (s *Scheduler) now() time.Time { return s.cfg.Now() }

// Schedule implements lifecycle.Timer: it enqueues an Asynq task for w
// and wakes the poller when w is an expiry sooner than it planned to look.
// It gives up after ScheduleTimeout with a log line; the due index still
// holds the work.
func (s *Scheduler) Schedule(ctx context.Context, w lifecycle.Work) {
	if s.stopped.Load() {
		s.log.Debug("scheduler stopped; timed work left to the due index", "kind", string(w.Kind), "session_id", w.SessionID)
		return
	}
	if w.Kind == lifecycle.WorkExpire && w.At.UnixMilli() < s.nextWake.Load() {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
	// The change has committed: a caller that goes away now must not take
	// the task with it.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ScheduleTimeout)
	defer cancel()
	if err := s.enqueueWork(ctx, w); err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		s.log.Warn("schedule timed work", "kind", string(w.Kind), "session_id", w.SessionID, "err", err.Error())
	}
}

// Start starts the Asynq server, the poller and the cron sweep. ctx only
// carries values: the scheduler runs until Shutdown.
func (s *Scheduler) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.state == stateRunning:
		return errors.New("start scheduler: already started")
	case s.state == stateStopped:
		return errors.New("start scheduler: already shut down")
	case s.svc == nil:
		return errors.New("start scheduler: no service (call Drive first)")
	}
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("start scheduler: %w", err)
	}
	s.workCtx, s.cancelWork = context.WithCancel(context.WithoutCancel(ctx))

	s.srv = asynq.NewServerFromRedisClient(s.tasksRDB, asynq.Config{
		Concurrency:              s.cfg.TaskWorkers,
		Queues:                   map[string]int{QueueExpiry: 3, QueueMaintenance: 1},
		BaseContext:              func() context.Context { return s.workCtx },
		RetryDelayFunc:           retryDelay,
		IsFailure:                isFailure,
		ErrorHandler:             asynq.ErrorHandlerFunc(s.taskFailed),
		ShutdownTimeout:          s.cfg.ShutdownTimeout,
		DelayedTaskCheckInterval: s.cfg.DelayedTaskCheckInterval,
		// How long an idle worker waits before it looks at the queues again;
		// short, so that Shutdown is not held up by an idle worker's nap.
		TaskCheckInterval: 200 * time.Millisecond,
		Logger:            asynqLogger{s.log},
		LogLevel:          asynq.WarnLevel,
	})
	mux := asynq.NewServeMux()
	for _, k := range kinds {
		mux.HandleFunc(taskType(k), s.workHandler(k))
	}
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
// the poller, whose in-flight Runs finish), then the Asynq server (no new
// tasks; running ones finish). At ctx's deadline the work still running is
// cancelled: Asynq retries cut-off tasks, and claimed ids come due again
// when their lease ends, so nothing is lost. Shutdown returns once every
// goroutine the scheduler started has ended. Shutdown before Start, or a
// second Shutdown, does nothing.
func (s *Scheduler) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == stateStopped {
		return nil
	}
	s.stopped.Store(true)
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
	notDue func(k lifecycle.WorkKind, id string)                           // a task came before its time
	ticked func(tick time.Time, enqueued bool)                             // a cron tick tried to enqueue its sweep
	swept  func(tick time.Time)                                            // a sweep finished
}
