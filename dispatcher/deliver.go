package dispatcher

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"

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

// recordTimeout bounds the write of an attempt's record.
const recordTimeout = 5 * time.Second

// processTask is the Asynq handler of a delivery task: one attempt, unless
// the endpoint's breaker or concurrency limit defers it.
func (d *Dispatcher) processTask(ctx context.Context, t *asynq.Task) error {
	d.inflight.add()
	defer d.inflight.done()
	p, err := decodePayload(t.Payload())
	if err != nil {
		d.log.Error("archiving malformed delivery task", "err", err.Error())
		return fmt.Errorf("%v: %w", err, asynq.SkipRetry)
	}
	ep := d.eps[p.Endpoint]
	switch {
	case ep == nil:
		return d.giveUp(ctx, p, "endpoint "+p.Endpoint+" is no longer configured")
	case ep.disabled:
		return d.giveUp(ctx, p, "endpoint is disabled in the configuration")
	case ep.marked.Load() && !p.Replay:
		// A replay may probe a disabled endpoint; a 2xx enables it again.
		return d.giveUp(ctx, p, "endpoint is disabled: it answered 410 Gone")
	}

	// The breaker and the limiter measure the endpoint's health in wall
	// clock time, like the attempts' latency.
	wall := time.Now()
	if ok, wait := ep.breaker.allow(wall); !ok {
		return d.deferral("circuit breaker open", wait)
	}
	if !ep.limit.tryAcquire(wall) {
		ep.breaker.abandon()
		return d.deferral("endpoint busy", ep.limit.busyDelay(wall))
	}
	retried, _ := asynq.GetRetryCount(ctx)
	attempt := p.Base + retried + 1
	at := d.now()
	res := d.send(ctx, ep, p, attempt, at)
	ep.limit.release(wall, res.latency)
	if ctx.Err() != nil && d.cutting.Load() {
		ep.breaker.abandon()
		return &deferError{reason: "cut off by shutdown"}
	}
	ep.breaker.done(res.healthy(), res.start, time.Now())
	d.cfg.Metrics.SetCircuit(ep.id, ep.breaker.isOpen())
	d.cfg.Metrics.ObserveAttempt(ep.id, res.outcome(), d.now().Sub(eventTime(p.Body, at)))

	a := &Attempt{
		Attempt:           attempt,
		At:                lifecycle.At(at),
		StatusCode:        res.code,
		LatencyMS:         math.Round(float64(res.latency.Microseconds())) / 1000,
		Error:             res.errText,
		ResponseBody:      res.body,
		ResponseTruncated: res.truncated,
	}
	// Attributes are built only for a line that is written: this is the
	// hot path.
	logf := func(level slog.Level, msg string, args ...any) {
		if d.log.Enabled(ctx, level) {
			d.log.Log(ctx, level, msg, append([]any{"delivery_id", p.Delivery, "endpoint_id", ep.id,
				"event", p.Type, "attempt", attempt, "status_code", res.code}, args...)...)
		}
	}
	var (
		status string
		ret    error
	)
	switch {
	case res.ok():
		status = StatusSucceeded
		d.stats.succeeded.Add(1)
		logf(slog.LevelDebug, "webhook delivered", "latency_ms", a.LatencyMS)
		if p.Replay && ep.marked.Load() {
			if err := d.EnableEndpoint(context.WithoutCancel(ctx), ep.id); err != nil {
				logf(slog.LevelWarn, "enable endpoint", "err", err.Error())
			}
		}
	case res.code == http.StatusGone:
		status = StatusDead
		d.stats.failed.Add(1)
		d.stats.dead.Add(1)
		ep.marked.Store(true)
		if err := d.store.disable(context.WithoutCancel(ctx), ep, "answered 410 Gone"); err != nil {
			logf(slog.LevelError, "persist disabled endpoint", "err", err.Error())
		}
		logf(slog.LevelWarn, "webhook endpoint disabled: it answered 410 Gone")
		ret = fmt.Errorf("%s: %w", a.Error, asynq.SkipRetry)
	case retried >= d.schedule.retries():
		status = StatusDead
		d.stats.failed.Add(1)
		d.stats.dead.Add(1)
		logf(slog.LevelWarn, "webhook delivery dead: retries used up", "err", a.Error)
		ret = fmt.Errorf("%s: retries used up: %w", a.Error, asynq.SkipRetry)
	default:
		status = StatusFailed
		d.stats.failed.Add(1)
		logf(slog.LevelInfo, "webhook attempt failed", "err", a.Error)
		ret = &attemptError{msg: a.Error, retryAfter: res.retryAfter}
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	if err := d.rec.write(rctx, p.Session, p.Delivery, status, a); err != nil {
		logf(slog.LevelWarn, "record webhook attempt", "err", err.Error())
	}
	return ret
}

// deferral puts a delivery back for later without using up an attempt.
func (d *Dispatcher) deferral(reason string, delay time.Duration) error {
	d.stats.deferred.Add(1)
	return &deferError{reason: reason, delay: delay}
}

// giveUp marks a delivery dead without an attempt and archives its task.
func (d *Dispatcher) giveUp(ctx context.Context, p *taskPayload, why string) error {
	d.stats.dead.Add(1)
	d.log.Warn("webhook delivery dead", "delivery_id", p.Delivery, "endpoint_id", p.Endpoint, "err", why)
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	if err := d.store.attempt(rctx, p.Session, p.Delivery, StatusDead, nil, why); err != nil {
		d.log.Warn("record webhook delivery", "delivery_id", p.Delivery, "err", err.Error())
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

// eventTime is the timestamp of the webhook body, or def when it has none.
func eventTime(body []byte, def time.Time) time.Time {
	var b struct {
		Timestamp lifecycle.Time `json:"timestamp"`
	}
	if json.Unmarshal(body, &b) != nil || b.Timestamp.IsZero() {
		return def
	}
	return b.Timestamp.Time
}

// healthy reports whether the attempt shows a working endpoint, for the
// circuit breaker: it answered, and neither 5xx nor 429.
func (r *result) healthy() bool {
	return r.code != 0 && r.code < 500 && r.code != http.StatusTooManyRequests
}

// send makes one signed POST of the delivery's body, signed at now.
func (d *Dispatcher) send(ctx context.Context, ep *endpoint, p *taskPayload, attempt int, now time.Time) (res result) {
	res.start = time.Now()
	defer func() { res.latency = time.Since(res.start) }()
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.url, bytes.NewReader(p.Body))
	if err != nil {
		res.errText = "build request: invalid endpoint URL"
		return res
	}
	if err := ep.signer.SetHeaders(req.Header, p.Event, now, p.Body); err != nil {
		res.errText = err.Error()
		return res
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
