package dispatcher

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/internal/keyspace"
	"github.com/sessiond/sessiond/lifecycle"
)

// Events is what the dispatcher reads of the lifecycle: the parts of
// events' data that the outbox leaves out. *lifecycle.Service is one.
type Events interface {
	EventDetails(ctx context.Context, events []*lifecycle.Event) (data []lifecycle.EventData, full []bool, err error)
}

// Dispatcher delivers the outbox's events to the configured endpoints.
// Start and Shutdown may each be called once; Shutdown without Start, or
// twice, does nothing.
type Dispatcher struct {
	cfg      Config
	rdb      redis.UniversalClient
	events   Events
	keys     keyspace.Space
	queues   []string // the webhook queues, by part of the slot range
	log      *slog.Logger
	now      func() time.Time
	store    *store
	rec      *recorder
	schedule schedule

	// configured are the configuration's endpoints; reg is every
	// endpoint, the API's too (endpoints.go). ready is closed once reg
	// holds the API's: nothing is delivered before.
	configured []*endpoint
	reg        atomic.Pointer[registry]
	reloadMu   sync.Mutex // serialises reloads of reg: it never goes back
	ready      chan struct{}
	readyOnce  sync.Once

	transport   *http.Transport
	http        *http.Client
	client      *asynq.Client
	inspector   *asynq.Inspector
	server      *asynq.Server // retries, deferrals and replays
	jobs        chan *job     // first attempts, to the workers
	room        chan struct{} // a slot was freed (free)
	consumer    string        // this process's name in the outbox group
	taskTimeout time.Duration // Asynq's deadline for one task
	tick        time.Duration // the maintenance loop's period

	// baseCtx is every delivery's parent; cutOff cancels it when the
	// shutdown deadline comes, and cutting says so.
	baseCtx  context.Context
	cutOff   context.CancelFunc
	cutting  atomic.Bool
	inflight tracker
	flight   *flight // outbox entries being delivered, by shard

	mu       sync.Mutex
	state    int
	cancel   context.CancelFunc // stops the relays and the maintenance loop
	stopping context.Context    // done once Shutdown begins
	loops    sync.WaitGroup
	workers  sync.WaitGroup

	stats counters
}

const (
	stateNew = iota
	stateStarted
	stateStopped
)

// New returns a Dispatcher that reads the outbox and keeps its records in
// rdb, and puts webhook bodies together from events' details. It fails if
// an endpoint's configuration is invalid; the error never quotes a URL or
// secret.
func New(rdb redis.UniversalClient, events Events, cfg Config) (*Dispatcher, error) {
	cfg.setDefaults()
	for _, d := range cfg.RetrySchedule {
		if d <= 0 {
			return nil, errors.New("dispatcher: retry schedule delays must be positive")
		}
	}
	keys := keyspace.New(cfg.Namespace)
	d := &Dispatcher{
		cfg:      cfg,
		rdb:      rdb,
		events:   events,
		keys:     keys,
		queues:   keys.WebhookQueues(),
		log:      cfg.Logger,
		now:      cfg.Now,
		store:    &store{rdb: rdb, keys: keys, now: cfg.Now, retention: cfg.Retention},
		schedule: newSchedule(cfg.RetrySchedule, cfg.Jitter),
		ready:    make(chan struct{}),
		jobs:     make(chan *job),
		room:     make(chan struct{}, 1),
		consumer: consumerName(),
		flight:   newFlight(),
		tick:     maintainPeriod(cfg.ClaimIdle),
		// Asynq keeps timeouts in whole seconds; leave room for the
		// attempt's own timeout and the record write after it.
		taskTimeout: (cfg.Timeout + 30*time.Second + time.Second - 1).Truncate(time.Second),
	}
	seen := make(map[string]bool, len(cfg.Endpoints))
	for _, ep := range cfg.Endpoints {
		e, err := newEndpoint(ep, &cfg)
		if err != nil {
			return nil, fmt.Errorf("dispatcher: %w", err)
		}
		if seen[e.id] {
			return nil, fmt.Errorf("dispatcher: endpoint %s: duplicate id", e.id)
		}
		seen[e.id] = true
		d.configured = append(d.configured, e)
	}
	reg, err := d.buildRegistry(nil, "", nil, nil, nil)
	if err != nil {
		return nil, err
	}
	d.reg.Store(reg)
	d.rec = newRecorder(d.store)
	d.transport = newTransport(cfg.AllowNetworks, cfg.Timeout, cfg.Concurrency)
	d.http = newHTTPClient(d.transport)
	queue := rdb
	if cfg.QueueRedis != nil {
		queue = cfg.QueueRedis
	}
	d.client = asynq.NewClientFromRedisClient(queue)
	d.inspector = asynq.NewInspectorFromRedisClient(queue)
	d.baseCtx, d.cutOff = context.WithCancel(context.Background())
	qs := make(map[string]int, len(d.queues))
	for _, q := range d.queues {
		qs[q] = 1
	}
	d.server = asynq.NewServerFromRedisClient(queue, asynq.Config{
		Concurrency:              cfg.RetryConcurrency,
		BaseContext:              func() context.Context { return d.baseCtx },
		TaskCheckInterval:        cfg.TaskCheckInterval,
		DelayedTaskCheckInterval: cfg.DelayedTaskCheckInterval,
		RetryDelayFunc:           d.retryDelay,
		IsFailure:                d.isFailure,
		Queues:                   qs,
		// Shutdown drains deliveries itself (see Shutdown); this only
		// bounds a handler that ignores its cancelled context.
		ShutdownTimeout: 2 * time.Second,
		Logger:          asynqLogger{cfg.Logger.With("library", "asynq")},
		LogLevel:        asynq.WarnLevel,
	})
	return d, nil
}

// consumerName names this process in the outbox group.
func consumerName() string {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	rand.Read(b) // never fails since Go 1.24
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b))
}

// queueOf is the webhook queue of a session's shard.
func (d *Dispatcher) queueOf(sh keyspace.Shard) string { return keyspace.WebhookQueue(d.queues, sh) }

// Start starts the workers, the Asynq server of retries, then the relays
// and the maintenance loop (stale outbox entries, orphaned tasks, breaker
// marks). It does not block. ctx's values reach the loops; its
// cancellation does not stop them: Shutdown does.
func (d *Dispatcher) Start(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.state != stateNew {
		return errors.New("dispatcher: Start called twice or after Shutdown")
	}
	go d.rec.run()
	for range d.cfg.Concurrency {
		d.workers.Go(d.work)
	}
	if err := d.server.Start(asynq.HandlerFunc(d.processTask)); err != nil {
		close(d.jobs)
		d.workers.Wait()
		d.rec.close()
		d.state = stateStopped
		return fmt.Errorf("dispatcher: start workers: %w", err)
	}
	d.state = stateStarted
	loopCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	d.cancel, d.stopping = cancel, loopCtx
	first, stop := context.WithTimeout(loopCtx, time.Second)
	if err := d.reloadEndpoints(first, true); err != nil {
		// The watcher keeps trying; nothing is delivered meanwhile.
		d.log.Warn("read the webhook endpoints; deliveries wait until they are read", "err", err.Error())
	} else {
		d.endpointsLoaded()
	}
	stop()
	d.loops.Go(func() { d.watchEndpoints(loopCtx) })
	for _, shards := range relayGroups(d.rdb) {
		d.loops.Go(func() { d.relay(loopCtx, shards) })
	}
	d.loops.Go(func() { d.maintain(loopCtx) })
	return nil
}

// Shutdown stops the dispatcher in the order that loses nothing: first
// the producers (relays, maintenance loop), then the deliveries in flight
// may finish until shortly before ctx's deadline. Those still running then
// are cancelled: a first attempt's outbox entry stays unacknowledged, for
// another replica or the next process; a retry is given back to its queue
// due at once, without using up an attempt. It returns ctx's error if it
// had to cut deliveries off.
func (d *Dispatcher) Shutdown(ctx context.Context) error {
	d.mu.Lock()
	state := d.state
	d.state = stateStopped
	d.mu.Unlock()
	if state != stateStarted {
		return nil
	}
	d.cancel()
	d.loops.Wait()
	close(d.jobs) // the relays are gone: no more first attempts
	// First attempts still waiting in a line are not made: their entries
	// stay pending, for another replica's claim or the next process's,
	// so a busy endpoint does not hold the shutdown.
	for _, ep := range d.endpoints().order {
		for _, j := range ep.limit.drop() {
			d.flight.remove(j.entry.shard, j.entry.id)
		}
	}

	d.server.Stop()
	drainCtx, cancel := context.WithCancel(ctx)
	if deadline, ok := ctx.Deadline(); ok {
		// Leave time to put the cut-off tasks back.
		margin := min(time.Until(deadline)/5, time.Second)
		drainCtx, cancel = context.WithDeadline(ctx, deadline.Add(-margin))
	}
	defer cancel()
	var err error
	select {
	case <-d.inflight.idle():
	case <-drainCtx.Done():
		n := d.inflight.count()
		d.log.Warn("shutdown deadline: cutting deliveries off; they will be retried", "deliveries", n)
		d.cutting.Store(true)
		d.cutOff()
		err = fmt.Errorf("dispatcher: shutdown cut %d deliveries off: %w", n, ctx.Err())
	}
	d.server.Shutdown()
	d.workers.Wait()
	d.rec.close() // after the workers: it writes their records
	d.cutOff()
	d.transport.CloseIdleConnections()
	return err
}

// EnableEndpoint removes the disabled mark a 410 answer left on an
// endpoint, for every replica. A replay that gets a 2xx does the same.
func (d *Dispatcher) EnableEndpoint(ctx context.Context, id string) error {
	ep := d.endpoints().endpoint(id)
	if ep == nil {
		return fmt.Errorf("enable endpoint %s: %w", id, ErrEndpointNotFound)
	}
	if err := d.store.enable(ctx, id); err != nil {
		return err
	}
	ep.marked.Store(false)
	d.log.Info("webhook endpoint enabled", "endpoint_id", id)
	return nil
}

// EndpointDisabled reports whether an endpoint gets no deliveries, by
// configuration, by a change or after a 410 answer.
func (d *Dispatcher) EndpointDisabled(id string) bool {
	ep := d.endpoints().endpoint(id)
	return ep == nil || ep.disabledNow()
}

// endpointsLoaded records that the registry holds the API's endpoints.
func (d *Dispatcher) endpointsLoaded() { d.readyOnce.Do(func() { close(d.ready) }) }

// waitEndpoints waits until the registry holds the API's endpoints.
func (d *Dispatcher) waitEndpoints(ctx context.Context) error {
	select {
	case <-d.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// retryDelay is the Asynq server's RetryDelayFunc. failures is the task's
// retry count before this failure.
func (d *Dispatcher) retryDelay(failures int, err error, t *asynq.Task) time.Duration {
	var de *deferError
	var ae *attemptError
	switch {
	case errors.As(err, &de):
		return de.delay
	case !d.isFailure(err):
		return 0 // a cut-off or orphaned task: again at once
	case t.Type() == recoverTaskType:
		return recoveryRetryDelay
	case errors.As(err, &ae) && ae.retryAfter > 0:
		return notEarlier(d.schedule.clamp(ae.retryAfter), time.Now())
	}
	failed := 0
	if p, perr := decodePayload(t.Payload()); perr == nil {
		failed = p.Failed
	}
	return notEarlier(d.schedule.delay(failed+failures+1), time.Now())
}

// notEarlier returns a delay from now that Asynq, which keeps due times in
// whole unix seconds (truncated), will not run before now+delay: the time
// to the next whole second at or after it, plus a millisecond for the
// instant between this call and Asynq's own clock reading.
func notEarlier(delay time.Duration, now time.Time) time.Duration {
	due := now.Add(delay)
	at := due.Truncate(time.Second)
	if at.Before(due) {
		at = at.Add(time.Second)
	}
	return at.Sub(now) + time.Millisecond
}

// isFailure is the Asynq server's IsFailure: only a real attempt uses up
// the schedule. A deferral, a delivery cut off by shutdown and a task
// whose worker died keep their retry count.
func (d *Dispatcher) isFailure(err error) bool {
	var de *deferError
	switch {
	case errors.As(err, &de), errors.Is(err, asynq.ErrLeaseExpired):
		return false
	case errors.Is(err, context.Canceled) && d.cutting.Load():
		return false
	}
	return true
}

// Stats counts what this process did since New.
type Stats struct {
	Attempts  int64 // first attempts made by the workers
	Succeeded int64 // attempts answered 2xx
	Failed    int64 // attempts that failed
	Dead      int64 // deliveries given up (archived)
	Deferred  int64 // deliveries deferred by a breaker or a busy endpoint
	Waited    int64 // first attempts that waited in a busy endpoint's line
	Requeued  int64 // tasks given back after their worker died
	Dropped   int64 // deliveries of purged sessions, not sent
}

type counters struct {
	attempts, succeeded, failed, dead, deferred, waited, requeued, dropped atomic.Int64
}

// Stats returns the counters.
func (d *Dispatcher) Stats() Stats {
	c := &d.stats
	return Stats{
		Attempts:  c.attempts.Load(),
		Succeeded: c.succeeded.Load(),
		Failed:    c.failed.Load(),
		Dead:      c.dead.Load(),
		Deferred:  c.deferred.Load(),
		Waited:    c.waited.Load(),
		Requeued:  c.requeued.Load(),
		Dropped:   c.dropped.Load(),
	}
}

// tracker counts deliveries in flight.
type tracker struct {
	mu   sync.Mutex
	n    int
	zero chan struct{} // closed while n == 0; nil means closed
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (t *tracker) add() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n == 0 {
		t.zero = make(chan struct{})
	}
	t.n++
}

func (t *tracker) done() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n--
	if t.n == 0 {
		close(t.zero)
	}
}

// idle is closed once nothing is in flight.
func (t *tracker) idle() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n == 0 {
		return closedChan
	}
	return t.zero
}

func (t *tracker) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n
}

// asynqLogger writes Asynq's log lines through slog.
type asynqLogger struct{ l *slog.Logger }

func (a asynqLogger) Debug(args ...any) { a.l.Debug(fmt.Sprint(args...)) }
func (a asynqLogger) Info(args ...any)  { a.l.Info(fmt.Sprint(args...)) }
func (a asynqLogger) Warn(args ...any)  { a.l.Warn(fmt.Sprint(args...)) }
func (a asynqLogger) Error(args ...any) { a.l.Error(fmt.Sprint(args...)) }

// Fatal logs at error level; Asynq exits the process itself after it.
func (a asynqLogger) Fatal(args ...any) { a.l.Error(fmt.Sprint(args...)) }
