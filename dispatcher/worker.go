package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/lifecycle"
)

// The workers make every delivery's first attempt, straight from the
// relay: no Asynq task, no extra round trip. What follows a first attempt
// goes to Asynq, where operators see it: a retry after a failure, a
// deferral while the endpoint's breaker is open or it is busy, a dead
// delivery (archived). The task is enqueued before the attempt is
// recorded, and the record acknowledges the outbox entry, so a crash at any
// point leaves the entry pending for a claim: its delivery is then made
// again (at least once), never lost.

// work makes first attempts until the jobs channel is closed.
func (d *Dispatcher) work() {
	for j := range d.jobs {
		d.first(j)
	}
}

// first makes the first attempt of one delivery, or puts it in its
// endpoint's line, or defers it; then, in the slot it used, the first
// attempts that waited in the line for one.
func (d *Dispatcher) first(j *job) {
	d.inflight.add()
	defer d.inflight.done()
	ep := j.ep
	wall := time.Now()
	if ok, wait := ep.breaker.allow(wall); !ok {
		d.deferFirst(j, "circuit breaker open", wait)
		return
	}
	acquired, waiting := ep.limit.acquireOrWait(wall, j)
	switch {
	case waiting:
		ep.breaker.abandon() // the attempt that hands it a slot asks again
		d.stats.waited.Add(1)
		return
	case !acquired:
		ep.breaker.abandon()
		d.deferFirst(j, "endpoint busy", ep.limit.busyDelay(wall))
		return
	}
	d.attempts(j, wall, true)
}

// attempts makes j's first attempt in the endpoint slot it has held since
// start (allowed: its breaker let it through already), then those of the
// first attempts the slot is handed over to.
func (d *Dispatcher) attempts(j *job, start time.Time, allowed bool) {
	for j != nil {
		j, start = d.attempt(j, start, allowed)
		allowed = false
	}
}

// resume makes, on a goroutine of its own, the first attempts a retry
// handed its endpoint slot over to.
func (d *Dispatcher) resume(j *job, start time.Time) {
	if j == nil {
		return
	}
	d.inflight.add() // while the retry that calls this is still counted
	go func() {
		defer d.inflight.done()
		d.attempts(j, start, false)
	}()
}

// attempt makes j's first attempt in the slot it has held since start,
// records it, and frees the slot. It returns the first attempt that waited
// for the slot, which now holds it, and that slot's start.
func (d *Dispatcher) attempt(j *job, start time.Time, allowed bool) (*job, time.Time) {
	ctx := d.baseCtx
	lim := j.ep.limit // the slot's, whatever the endpoint has become
	if !allowed {
		if outcome, why := d.refresh(ctx, j); outcome != waitedMake {
			next, nstart := d.free(lim, start, 0)
			d.settle(j, outcome, why)
			return next, nstart
		}
		if ok, wait := j.ep.breaker.allow(start); !ok {
			next, nstart := d.free(lim, start, 0)
			d.deferFirst(j, "circuit breaker open", wait)
			return next, nstart
		}
	}
	ev, ep := j.ev, j.ep
	d.stats.attempts.Add(1)
	at := d.now()
	res := d.send(ctx, ep, ev.ID, j.body, 1, at)
	next, nstart := d.free(lim, start, res.latency)
	if ctx.Err() != nil && d.cutting.Load() {
		// Cut off by shutdown: the entry stays pending for a claim, and
		// the attempt is made again (it was not recorded).
		ep.breaker.abandon()
		d.flight.remove(ev.Shard, j.entry.id)
		return next, nstart
	}
	d.observe(ep, &res, ev.Timestamp.Time)
	w := j.write()
	w.attempt = res.attempt(1, at)
	task := j.task()
	retries := d.schedule.retries()
	switch {
	case res.ok():
		w.status = StatusSucceeded
		d.stats.succeeded.Add(1)
	case res.code == http.StatusGone || retries == 0:
		w.status = StatusDead
		d.stats.failed.Add(1)
		d.stats.dead.Add(1)
		if res.code == http.StatusGone {
			d.gone(ctx, ep, task.Delivery)
		}
		task.Base = 1
		if err := d.bury(ctx, ev, task.Delivery, task); err != nil {
			d.unfinished(j, "archive dead delivery", err)
			return next, nstart
		}
	default:
		w.status = StatusFailed
		d.stats.failed.Add(1)
		delay := d.schedule.delay(1)
		if res.retryAfter > 0 {
			delay = d.schedule.clamp(res.retryAfter)
		}
		task.Base, task.Failed = 1, 1
		if err := d.enqueue(ctx, ev, task.Delivery, task, notEarlier(delay, time.Now()), retries); err != nil {
			d.unfinished(j, "schedule retry", err)
			return next, nstart
		}
	}
	d.logAttempt(ctx, w, &res)
	d.finish(j, w)
	return next, nstart
}

// A first attempt that waited in the line is, once it gets a slot:
const (
	waitedMake  = iota // made
	waitedDrop         // dropped: its endpoint was deleted or its session purged
	waitedDead         // dead: its endpoint was disabled
	waitedDefer        // deferred: its event's details could not be read
)

// refresh brings a first attempt that waited in the line up to date: the
// endpoint as it is now, and the body put together again from the event's
// details as they are now, so that a redaction or a purge made while it
// waited reaches it (as it reaches a retry). It says what becomes of the
// attempt, and why when that is not waitedMake.
func (d *Dispatcher) refresh(ctx context.Context, j *job) (outcome int, why string) {
	cur := d.endpoints().endpoint(j.ep.id)
	switch {
	case cur == nil:
		return waitedDrop, "endpoint deleted"
	case cur.disabled:
		return waitedDead, "endpoint is disabled"
	case cur.marked.Load():
		return waitedDead, "endpoint is disabled: it answered 410 Gone"
	}
	j.ep = cur
	data, full, err := d.events.EventDetails(ctx, []*lifecycle.Event{j.ev})
	if err != nil {
		return waitedDefer, "read the event's details: " + err.Error()
	}
	if !full[0] {
		return waitedDrop, "session purged"
	}
	body, err := j.ev.WebhookBody(data[0])
	if err != nil {
		return waitedDefer, "put the webhook body together: " + err.Error()
	}
	j.body = body
	return waitedMake, ""
}

// settle ends a first attempt that waited in the line and is not to be
// made. Dropped, its share of the entry is done without a record, as a
// retry of a deleted endpoint or a purged session is dropped; dead, it is
// archived (replayable) with why, as a retry to a disabled endpoint is;
// deferred, an Asynq task makes it later.
func (d *Dispatcher) settle(j *job, outcome int, why string) {
	switch outcome {
	case waitedDefer:
		d.deferFirst(j, why, time.Second)
	case waitedDead:
		d.stats.dead.Add(1)
		task := j.task()
		if err := d.bury(d.baseCtx, j.ev, task.Delivery, task); err != nil {
			d.unfinished(j, "archive dead delivery", err)
			return
		}
		w := j.write()
		w.status, w.err = StatusDead, why
		d.log.Warn("webhook delivery dead", "delivery_id", task.Delivery, "endpoint_id", j.ep.id, "err", why)
		d.finish(j, w)
	default:
		d.stats.dropped.Add(1)
		d.log.Debug("webhook delivery dropped", "delivery_id", deliveryID(j.ev.SessionID, j.ev.ID, j.ep.id), "reason", why)
		if j.entry.left.Add(-1) > 0 {
			return
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(d.baseCtx), recordTimeout)
		defer cancel()
		if err := d.rdb.XAck(ctx, d.keys.Outbox(j.entry.shard), relayGroup, j.entry.id).Err(); err != nil {
			d.unfinished(j, "acknowledge a dropped delivery", err)
			return
		}
		d.flight.remove(j.entry.shard, j.entry.id)
	}
}

// write is the start of the record of j's first attempt.
func (j *job) write() *write {
	ev := j.ev
	return &write{shard: ev.Shard, sessionID: ev.SessionID, eventID: ev.ID, endpointID: j.ep.id, cursor: ev.Cursor, eventType: ev.Type}
}

// task is the Asynq payload of what follows j's first attempt.
func (j *job) task() *taskPayload {
	return &taskPayload{Delivery: deliveryID(j.ev.SessionID, j.ev.ID, j.ep.id), Cursor: j.ev.Cursor}
}

// free releases the slot held since start by an attempt that took took
// (0: none was made), and tells a relay waiting for room in the lines
// (awaitRoom) to look again. It returns the first attempt the slot was
// handed to, if any, and the slot's new start (limiter.release).
func (d *Dispatcher) free(lim *limiter, start time.Time, took time.Duration) (*job, time.Time) {
	next, nstart := lim.release(start, took, time.Now())
	select {
	case d.room <- struct{}{}:
	default:
	}
	return next, nstart
}

// deferFirst puts a first attempt off without using it up: an Asynq task
// makes it after delay.
func (d *Dispatcher) deferFirst(j *job, reason string, delay time.Duration) {
	d.stats.deferred.Add(1)
	task := j.task()
	if err := d.enqueue(d.baseCtx, j.ev, task.Delivery, task, delay, d.schedule.retries()+1); err != nil {
		d.unfinished(j, "defer delivery", err)
		return
	}
	w := j.write()
	w.status = StatusPending
	d.log.Debug("webhook delivery deferred", "delivery_id", task.Delivery, "endpoint_id", j.ep.id, "reason", reason)
	d.finish(j, w)
}

// finish records a first attempt's outcome and, with the entry's last
// delivery, acknowledges the entry.
func (d *Dispatcher) finish(j *job, w *write) {
	last := j.entry.left.Add(-1) == 0
	if last {
		w.ack = j.entry.id
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(d.baseCtx), recordTimeout)
	defer cancel()
	if err := d.rec.write(ctx, w); err != nil {
		d.unfinished(j, "record webhook attempt", err)
		return
	}
	if last {
		d.flight.remove(j.entry.shard, j.entry.id)
	}
}

// unfinished gives up on a first attempt's bookkeeping after a Redis
// error: the entry is no longer kept fresh, so a claim (by any replica)
// delivers it again.
func (d *Dispatcher) unfinished(j *job, what string, err error) {
	d.log.Warn(what+"; the event will be delivered again", "delivery_id", deliveryID(j.ev.SessionID, j.ev.ID, j.ep.id), "err", err.Error())
	d.flight.remove(j.entry.shard, j.entry.id)
}

// enqueue adds the Asynq task of a delivery, due after delay, that may be
// retried maxRetry times; a task with the same id already there counts as
// done.
func (d *Dispatcher) enqueue(ctx context.Context, ev *lifecycle.Event, taskID string, p *taskPayload, delay time.Duration, maxRetry int) error {
	payload, err := p.encode()
	if err != nil {
		return err
	}
	_, err = d.client.EnqueueContext(ctx, asynq.NewTask(taskType, payload),
		asynq.TaskID(taskID),
		asynq.Queue(d.queueOf(ev.Shard)),
		asynq.ProcessIn(delay),
		// One more than the schedule allows, so that a deferral at the
		// last attempt is not archived; the handler archives (SkipRetry)
		// when the schedule is used up.
		asynq.MaxRetry(maxRetry),
		asynq.Timeout(d.taskTimeout),
	)
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		return nil
	}
	return err
}

// bury puts a delivery that died on its first attempt in Asynq's archive,
// where operators see (and can replay) the dead ones.
func (d *Dispatcher) bury(ctx context.Context, ev *lifecycle.Event, id string, p *taskPayload) error {
	if err := d.enqueue(ctx, ev, id, p, 24*time.Hour, 0); err != nil {
		return err
	}
	err := d.inspector.ArchiveTask(d.queueOf(ev.Shard), id)
	if err != nil && !errors.Is(err, asynq.ErrTaskNotFound) && !strings.Contains(err.Error(), "already archived") {
		return err
	}
	return nil
}

// gone disables an endpoint that answered 410, for every replica.
func (d *Dispatcher) gone(ctx context.Context, ep *endpoint, id string) {
	ep.marked.Store(true)
	if err := d.store.disable(context.WithoutCancel(ctx), ep, "answered 410 Gone"); err != nil {
		d.log.Error("persist disabled endpoint", "endpoint_id", ep.id, "err", err.Error())
	}
	d.log.Warn("webhook endpoint disabled: it answered 410 Gone", "endpoint_id", ep.id, "delivery_id", id)
}

// observe reports an attempt to the breaker and the metrics.
func (d *Dispatcher) observe(ep *endpoint, res *result, eventAt time.Time) {
	ep.breaker.done(res.healthy(), res.start, time.Now())
	d.cfg.Metrics.SetCircuit(ep.id, ep.breaker.isOpen())
	d.cfg.Metrics.ObserveAttempt(ep.id, res.outcome(), d.now().Sub(eventAt))
}

// logAttempt logs an attempt that did not succeed; attributes are built
// only for a line that is written: this is the hot path.
func (d *Dispatcher) logAttempt(ctx context.Context, w *write, res *result) {
	level := slog.LevelDebug
	msg := "webhook delivered"
	switch w.status {
	case StatusFailed:
		level, msg = slog.LevelInfo, "webhook attempt failed"
	case StatusDead:
		level, msg = slog.LevelWarn, "webhook delivery dead"
	}
	if !d.log.Enabled(ctx, level) {
		return
	}
	attrs := []slog.Attr{
		slog.String("delivery_id", deliveryID(w.sessionID, w.eventID, w.endpointID)),
		slog.String("endpoint_id", w.endpointID), slog.String("event", w.eventType),
		slog.Int("attempt", w.attempt.Attempt), slog.Int("status_code", res.code),
	}
	if res.errText != "" {
		attrs = append(attrs, slog.String("err", res.errText))
	}
	d.log.LogAttrs(ctx, level, msg, attrs...)
}

// recorder writes the workers' records, many per Redis round trip (group
// commit): a write waits for the pipeline that carries it, so a worker
// finishes only once its attempt is recorded, but concurrent workers share
// round trips. Under light load a pipeline carries one write and adds no
// delay.
type recorder struct {
	store *store
	reqs  chan *pendingWrite
	stop  chan struct{} // closed by close
	done  chan struct{} // closed when run has returned
	once  sync.Once
}

// maxRecordBatch bounds the writes of one pipeline.
const maxRecordBatch = 256

// recordTimeout bounds the write of an attempt's record.
const recordTimeout = 5 * time.Second

// errRecorderClosed is a write after the dispatcher stopped: the attempt
// is not recorded, so its entry or task is delivered again later.
var errRecorderClosed = errors.New("record attempt: dispatcher stopped")

type pendingWrite struct {
	w      *write
	result chan error // buffered
}

func newRecorder(s *store) *recorder {
	return &recorder{
		store: s,
		reqs:  make(chan *pendingWrite, maxRecordBatch),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
}

// run writes until close, then writes what was sent before it and returns.
func (r *recorder) run() {
	defer close(r.done)
	batch := make([]*pendingWrite, 0, maxRecordBatch)
	for {
		select {
		case pw := <-r.reqs:
			batch = append(batch[:0], pw)
		case <-r.stop:
			r.drain(batch)
			return
		}
		batch = r.fill(batch)
		r.flush(batch)
	}
}

// fill adds to batch the writes already waiting, up to maxRecordBatch.
func (r *recorder) fill(batch []*pendingWrite) []*pendingWrite {
	for len(batch) < maxRecordBatch {
		select {
		case pw := <-r.reqs:
			batch = append(batch, pw)
		default:
			return batch
		}
	}
	return batch
}

// drain writes every write still queued at close.
func (r *recorder) drain(batch []*pendingWrite) {
	for {
		batch = r.fill(batch[:0])
		if len(batch) == 0 {
			return
		}
		r.flush(batch)
	}
}

// close stops run after the writes already sent. A write after close
// returns errRecorderClosed (a handler that outlived the shutdown).
func (r *recorder) close() {
	r.once.Do(func() { close(r.stop) })
	<-r.done
}

func (r *recorder) flush(batch []*pendingWrite) {
	ctx, cancel := context.WithTimeout(context.Background(), recordTimeout)
	defer cancel()
	now := r.store.now()
	errs := make([]error, len(batch))
	cmds, err := r.store.pipeline(ctx, func(p redis.Pipeliner) {
		for i, pw := range batch {
			keys, argv, err := r.store.args(pw.w, now)
			if err != nil {
				errs[i] = err
				continue
			}
			recordScript.EvalSha(ctx, p, keys, argv...)
		}
	})
	c := 0
	for i, pw := range batch {
		switch {
		case errs[i] != nil:
			pw.result <- errs[i]
		case c < len(cmds):
			pw.result <- cmds[c].Err()
			c++
		default:
			pw.result <- err
		}
	}
}

// write records w and waits for it.
func (r *recorder) write(ctx context.Context, w *write) error {
	pw := &pendingWrite{w: w, result: make(chan error, 1)}
	select {
	case <-r.stop:
		return errRecorderClosed
	default:
	}
	select {
	case r.reqs <- pw:
	case <-r.stop:
		return errRecorderClosed
	case <-ctx.Done():
		return fmt.Errorf("record attempt: %w", ctx.Err())
	}
	select {
	case err := <-pw.result:
		if err != nil {
			return fmt.Errorf("record attempt: %w", err)
		}
		return nil
	case <-r.done:
		// run has returned: it wrote pw, or pw came in after its drain.
		select {
		case err := <-pw.result:
			if err != nil {
				return fmt.Errorf("record attempt: %w", err)
			}
			return nil
		default:
			return errRecorderClosed
		}
	case <-ctx.Done():
		return fmt.Errorf("record attempt: %w", ctx.Err())
	}
}

// attempt is the record of an HTTP attempt numbered n, made at at.
func (r *result) attempt(n int, at time.Time) *Attempt {
	return &Attempt{
		Attempt:           n,
		At:                lifecycle.At(at),
		StatusCode:        r.code,
		LatencyMS:         float64(r.latency.Microseconds()) / 1000,
		Error:             r.errText,
		ResponseBody:      r.body,
		ResponseTruncated: r.truncated,
	}
}
