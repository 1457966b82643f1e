package dispatcher

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/sessiond/sessiond/internal/keyspace"
	"github.com/sessiond/sessiond/lifecycle"
)

// HeaderAttempt numbers a delivery's attempts from 1, across retries and
// replays.
const HeaderAttempt = "webhook-attempt"

// userAgent identifies sessiond's webhooks.
const userAgent = "sessiond-webhooks/1"

// drainLimit is how much of a long answer is read past the kept part so
// that the connection can be reused.
const drainLimit = 64 << 10

// processTask is the Asynq handler of a delivery task (a retry, a
// deferral, a replay): one attempt, unless the endpoint's breaker or
// concurrency limit defers it. The webhook body is put together afresh
// from the outbox entry and the session's event details; a purged
// session's delivery is dropped, not sent.
func (d *Dispatcher) processTask(ctx context.Context, t *asynq.Task) error {
	d.inflight.add()
	defer d.inflight.done()
	if err := d.waitEndpoints(ctx); err != nil {
		return &deferError{reason: "endpoints not read yet"}
	}
	if t.Type() == recoverTaskType {
		return d.runRecovery(ctx, t)
	}
	p, err := decodePayload(t.Payload())
	if err != nil {
		d.log.Error("archiving malformed delivery task", "err", err.Error())
		return fmt.Errorf("%v: %w", err, asynq.SkipRetry)
	}
	err = d.deliverTask(ctx, p)
	if p.Recovery != "" && (err == nil || errors.Is(err, asynq.SkipRetry)) {
		// It ended: sent, dropped or dead. A dead one is archived under
		// the delivery's own id, where operators and a purge find dead
		// deliveries, not under the recovery's task id.
		if err != nil {
			err = d.buryRecovered(ctx, p, err)
		}
		d.recoveryDelivered(ctx, p)
	}
	return err
}

// buryRecovered archives the dead delivery of a recovery's task under
// the delivery's own id. It returns nil once that is done, so that Asynq
// deletes the recovery's task; else dead, the task's own SkipRetry.
func (d *Dispatcher) buryRecovered(ctx context.Context, p *taskPayload, dead error) error {
	sid, _, _, _ := parseDeliveryID(p.Delivery)
	sh, _ := lifecycle.ShardOfSession(sid)
	q := *p
	q.Recovery = ""
	if err := d.bury(context.WithoutCancel(ctx), &lifecycle.Event{Shard: sh}, p.Delivery, &q); err != nil {
		d.log.Warn("archive a recovered delivery under its own id", "delivery_id", p.Delivery, "err", err.Error())
		return dead
	}
	return nil
}

// endpointOf returns endpoint id and whether it was deleted. When the
// registry does not have it, or has it disabled, it looks at the current
// version first: a change made through another replica (a new endpoint,
// one enabled again) may not have reached this one yet.
func (d *Dispatcher) endpointOf(ctx context.Context, id string) (ep *endpoint, deleted bool) {
	reg := d.endpoints()
	ep = reg.endpoint(id)
	if (ep == nil && !reg.gone[id]) || (ep != nil && ep.disabledNow()) {
		if err := d.reloadEndpoints(ctx, false); err == nil {
			reg = d.endpoints()
			ep = reg.endpoint(id)
		}
	}
	return ep, ep == nil && reg.gone[id]
}

// deliverTask makes one attempt of a delivery task, unless the endpoint's
// breaker or concurrency limit defers it.
func (d *Dispatcher) deliverTask(ctx context.Context, p *taskPayload) error {
	sid, eid, epID, _ := parseDeliveryID(p.Delivery)
	sh, ok := lifecycle.ShardOfSession(sid)
	if !ok {
		return fmt.Errorf("delivery %s: %w", p.Delivery, asynq.SkipRetry)
	}
	ev, body, err := d.deliveryEvent(ctx, sh, sid, eid, p.Test, p.Cursor)
	switch {
	case errors.Is(err, errEventGone):
		d.stats.dropped.Add(1)
		d.log.Debug("webhook delivery dropped: its session was purged", "delivery_id", p.Delivery)
		return nil
	case err != nil:
		return err
	}
	w := &write{shard: sh, sessionID: sid, eventID: eid, endpointID: epID, cursor: p.Cursor, eventType: ev.Type, test: p.Test != ""}
	ep, deleted := d.endpointOf(ctx, epID)
	switch {
	case deleted:
		d.stats.dropped.Add(1)
		d.log.Debug("webhook delivery dropped: its endpoint was deleted", "delivery_id", p.Delivery)
		return nil
	case ep == nil:
		return d.giveUp(ctx, w, "endpoint "+epID+" is no longer configured")
	case ep.disabled:
		return d.giveUp(ctx, w, "endpoint is disabled")
	case ep.marked.Load() && !p.Replay:
		// A replay may probe a disabled endpoint; a 2xx enables it again.
		return d.giveUp(ctx, w, "endpoint is disabled: it answered 410 Gone")
	}
	retried, _ := asynq.GetRetryCount(ctx)
	if p.Recovery != "" && retried == 0 {
		// Before its first attempt: the normal path may have delivered
		// it, or be delivering it, since the walk looked. Only a delivery
		// still missing or dead is sent.
		_, sum, found, err := d.store.get(ctx, sh, sid, eid, epID)
		if err != nil {
			return err
		}
		if found && sum.Status != StatusDead {
			return nil
		}
	}

	// The breaker and the limiter measure the endpoint's health in wall
	// clock time, like the attempts' latency.
	wall := time.Now()
	if ok, wait := ep.breaker.allow(wall); !ok {
		return d.deferral("circuit breaker open", wait)
	}
	start, ok := ep.limit.acquireRetry(ctx, wall, retrySlotWait)
	if !ok {
		ep.breaker.abandon()
		return d.deferral("endpoint busy", ep.limit.busyDelay(time.Now()))
	}
	attempt := p.Base + retried + 1
	at := d.now()
	res := d.send(ctx, ep, ev.ID, body, attempt, at)
	d.resume(d.free(ep.limit, start, res.latency))
	if ctx.Err() != nil && d.cutting.Load() {
		ep.breaker.abandon()
		return &deferError{reason: "cut off by shutdown"}
	}
	d.observe(ep, &res, ev.Timestamp.Time)
	w.attempt = res.attempt(attempt, at)
	var ret error
	switch {
	case res.ok():
		w.status = StatusSucceeded
		d.stats.succeeded.Add(1)
		if p.Replay && ep.marked.Load() {
			if err := d.EnableEndpoint(context.WithoutCancel(ctx), ep.id); err != nil {
				d.log.Warn("enable endpoint", "endpoint_id", ep.id, "err", err.Error())
			}
		}
	case res.code == http.StatusGone:
		w.status = StatusDead
		d.stats.failed.Add(1)
		d.stats.dead.Add(1)
		d.gone(ctx, ep, p.Delivery)
		ret = fmt.Errorf("%s: %w", res.errText, asynq.SkipRetry)
	case p.Failed+retried >= d.schedule.retries():
		w.status = StatusDead
		d.stats.failed.Add(1)
		d.stats.dead.Add(1)
		ret = fmt.Errorf("%s: retries used up: %w", res.errText, asynq.SkipRetry)
	default:
		w.status = StatusFailed
		d.stats.failed.Add(1)
		ret = &attemptError{msg: res.errText, retryAfter: res.retryAfter}
	}
	d.logAttempt(ctx, w, &res)
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	if err := d.rec.write(rctx, w); err != nil {
		d.log.Warn("record webhook attempt", "delivery_id", p.Delivery, "err", err.Error())
	}
	return ret
}

// retrySlotWait is how long a retry waits for a busy endpoint's slot
// before it is deferred again.
const retrySlotWait = 2 * time.Second

// errEventGone is a delivery whose event, or whose session's event
// details, are gone: the session was purged (or the event is past its
// retention).
var errEventGone = errors.New("event gone")

// loadEvent reads a delivery's event from its outbox entry and puts its
// webhook body together.
func (d *Dispatcher) loadEvent(ctx context.Context, sh keyspace.Shard, cursor, eventID string) (*lifecycle.Event, []byte, error) {
	msgs, err := d.rdb.XRangeN(ctx, d.keys.Outbox(sh), cursor, cursor, 1).Result()
	if err != nil {
		return nil, nil, fmt.Errorf("read event: %w", err)
	}
	if len(msgs) == 0 {
		return nil, nil, errEventGone
	}
	ev, err := lifecycle.ParseEvent(sh, msgs[0])
	if err != nil || ev.ID != eventID {
		return nil, nil, fmt.Errorf("outbox entry %s is not event %s", cursor, eventID)
	}
	data, full, err := d.events.EventDetails(ctx, []*lifecycle.Event{ev})
	if err != nil {
		return nil, nil, err
	}
	if !full[0] {
		return nil, nil, errEventGone
	}
	body, err := ev.WebhookBody(data[0])
	return ev, body, err
}

// deferral puts a delivery back for later without using up an attempt.
func (d *Dispatcher) deferral(reason string, delay time.Duration) error {
	d.stats.deferred.Add(1)
	return &deferError{reason: reason, delay: delay}
}

// giveUp marks a delivery dead without an attempt and archives its task.
func (d *Dispatcher) giveUp(ctx context.Context, w *write, why string) error {
	d.stats.dead.Add(1)
	id := deliveryID(w.sessionID, w.eventID, w.endpointID)
	d.log.Warn("webhook delivery dead", "delivery_id", id, "endpoint_id", w.endpointID, "err", why)
	w.status, w.err = StatusDead, why
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	if err := d.store.record(rctx, w); err != nil {
		d.log.Warn("record webhook delivery", "delivery_id", id, "err", err.Error())
	}
	return fmt.Errorf("%s: %w", why, asynq.SkipRetry)
}

// result is the outcome of one HTTP attempt.
type result struct {
	start      time.Time // wall clock, for the latency
	latency    time.Duration
	code       int    // 0 without an answer
	errText    string // "" on success
	body       string
	truncated  bool
	retryAfter time.Duration
}

func (r *result) ok() bool { return r.code >= 200 && r.code < 300 }

// outcome names the attempt's result for metrics.
func (r *result) outcome() string {
	switch {
	case r.ok():
		return "success"
	case r.code == http.StatusGone:
		return "gone"
	case r.code != 0:
		return "failure"
	case strings.HasPrefix(r.errText, timeoutPrefix):
		return "timeout"
	}
	return "error"
}

// healthy reports whether the attempt shows a working endpoint, for the
// circuit breaker: it answered, and neither 5xx nor 429.
func (r *result) healthy() bool {
	return r.code != 0 && r.code < 500 && r.code != http.StatusTooManyRequests
}

// send makes one signed POST of an event's webhook body, signed at now.
func (d *Dispatcher) send(ctx context.Context, ep *endpoint, eventID string, body []byte, attempt int, now time.Time) (res result) {
	res.start = time.Now()
	defer func() { res.latency = time.Since(res.start) }()
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.url, bytes.NewReader(body))
	if err != nil {
		res.errText = "build request: invalid endpoint URL"
		return res
	}
	if err := ep.signer.SetHeaders(req.Header, eventID, now, body); err != nil {
		res.errText = err.Error()
		return res
	}
	for name, vs := range ep.headers { // validated: none is sessiond's own
		req.Header[name] = vs
	}
	req.Header.Set(HeaderAttempt, strconv.Itoa(attempt))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", userAgent)
	resp, err := d.http.Do(req)
	if err != nil {
		res.errText = d.transportError(ctx, err)
		return res
	}
	defer resp.Body.Close()
	res.code = resp.StatusCode
	limit := d.cfg.ResponseBodyLimit
	b, _ := io.ReadAll(io.LimitReader(resp.Body, int64(limit)+1))
	if len(b) > limit {
		b, res.truncated = b[:limit], true
		_, _ = io.CopyN(io.Discard, resp.Body, drainLimit)
	}
	res.body = string(b)
	switch {
	case res.ok():
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		res.errText = "HTTP " + resp.Status + " (redirects are not followed)"
	default:
		res.errText = "HTTP " + resp.Status
	}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		if wait, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
			res.retryAfter = max(wait, time.Nanosecond) // 0 means "none"; clamp raises it
		}
	}
	return res
}

// transportError describes an attempt that got no answer, without the URL
// (it may hold credentials).
const timeoutPrefix = "timeout after "

func (d *Dispatcher) transportError(ctx context.Context, err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	switch {
	case errors.Is(err, ErrBlockedAddress):
	case errors.Is(ctx.Err(), context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return timeoutPrefix + d.cfg.Timeout.String()
	}
	return err.Error()
}
