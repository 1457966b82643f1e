package dispatcher

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/internal/keyspace"
	"github.com/sessiond/sessiond/lifecycle"
)

// A recovery re-sends to one endpoint every event of a time window that
// the endpoint subscribes to and did not receive with a 2xx: the events
// whose delivery is dead, and those that have no delivery at all (they
// came while the endpoint was disabled, or before it existed). It is an
// Asynq task (recoverTaskType) that walks each shard's outbox in the
// window, a page at a time, and keeps its position per shard in the
// recovery's hash (keyspace: rcv:<id>) with its counts, in one
// transaction per page. A crash, a shutdown or a lost lease gives the task
// back to its queue and the walk goes on from the last page it saved.
//
// A page is scheduled before its position is saved, so a page may be
// scheduled twice; its deliveries' task ids are fixed (recovery and
// delivery id), so Asynq refuses the second while the first is queued,
// and a delivery that already ran has a record the walk skips. Each
// delivery task looks at its record again before it sends: one that
// succeeded meanwhile is not sent again.

// recoverTaskType is the Asynq task type of a recovery's walk.
const recoverTaskType = "sessiond:recover"

// Recovery statuses. A recovery is "running" while it walks the feed,
// "delivering" once it has scheduled everything and until the deliveries
// it scheduled have ended (succeeded or dead), then "done". "failed" says
// why it stopped in Recovery.Error.
const (
	RecoveryRunning    = "running"
	RecoveryDelivering = "delivering"
	RecoveryDone       = "done"
	RecoveryFailed     = "failed"
)

// Limits of a recovery.
const (
	recoveryPage       = 500 // outbox entries per page (one XRANGE, one pipeline of HGETs)
	recoveryIDPrefix   = "rcv_"
	recoveryTaskTries  = 25
	recoveryTaskExpiry = time.Hour // Asynq's deadline for one run of the walk
)

// ErrRecoveryNotFound is an unknown or expired recovery id.
var ErrRecoveryNotFound = errors.New("recovery not found")

// Recovery is a recovery's progress, as the admin API shows it.
type Recovery struct {
	ID         string         `json:"id"`
	EndpointID string         `json:"endpoint_id"`
	Since      lifecycle.Time `json:"since"`
	Until      lifecycle.Time `json:"until"`
	Status     string         `json:"status"`
	Error      string         `json:"error,omitempty"`
	Scanned    int64          `json:"scanned"`   // events of the window looked at
	Scheduled  int64          `json:"scheduled"` // deliveries scheduled
	Done       int64          `json:"done"`      // of those, ended (succeeded or dead)
	CreatedAt  lifecycle.Time `json:"created_at"`
}

// Fields of a recovery's hash; "p<shard>" holds a shard's position: the
// last outbox entry walked, or "end".
const (
	rcvEndpoint  = "ep"
	rcvSince     = "since"
	rcvUntil     = "until"
	rcvStatus    = "status"
	rcvError     = "err"
	rcvScanned   = "scanned"
	rcvScheduled = "scheduled"
	rcvDone      = "done"
	rcvCreated   = "created"
	rcvEnd       = "end"
)

func rcvPosition(sh keyspace.Shard) string { return "p" + strconv.Itoa(int(sh)) }

// recoverPayload is a recovery task's payload.
type recoverPayload struct {
	ID string `json:"id"`
}

// Recover starts a recovery of endpoint id over [since, until] (until zero
// or later than now: now) and returns it. The endpoint must be enabled:
// what a recovery schedules to a disabled one would die at once.
func (d *Dispatcher) Recover(ctx context.Context, id string, since, until time.Time) (*Recovery, error) {
	now := d.now()
	if until.IsZero() || until.After(now) {
		until = now
	}
	if since.IsZero() || !since.Before(until) {
		return nil, invalidf("since: want a time before until (and before now)")
	}
	if err := d.reloadEndpoints(ctx, false); err != nil {
		return nil, err
	}
	ep := d.endpoints().endpoint(id)
	switch {
	case ep == nil:
		return nil, ErrEndpointNotFound
	case ep.disabledNow():
		return nil, ErrEndpointDisabled
	}
	b := make([]byte, 8)
	rand.Read(b) // never fails since Go 1.24
	rid := recoveryIDPrefix + hex.EncodeToString(b)
	key := d.keys.Recovery(rid)
	_, err := d.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, key, rcvEndpoint, id, rcvSince, since.UnixMilli(), rcvUntil, until.UnixMilli(),
			rcvStatus, RecoveryRunning, rcvScanned, 0, rcvScheduled, 0, rcvDone, 0, rcvCreated, now.UnixMilli())
		p.Expire(ctx, key, d.cfg.Retention)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("start recovery: %w", err)
	}
	payload, _ := json.Marshal(recoverPayload{ID: rid}) // cannot fail
	_, err = d.client.EnqueueContext(ctx, asynq.NewTask(recoverTaskType, payload),
		asynq.TaskID(rid), asynq.Queue(d.queues[0]), asynq.MaxRetry(recoveryTaskTries), asynq.Timeout(recoveryTaskExpiry))
	if err != nil {
		d.rdb.Del(context.WithoutCancel(ctx), key)
		return nil, fmt.Errorf("start recovery: %w", err)
	}
	d.log.Info("webhook recovery started", "recovery_id", rid, "endpoint_id", id,
		"since", lifecycle.At(since).String(), "until", lifecycle.At(until).String())
	return d.Recovery(ctx, rid)
}

// Recovery returns a recovery's progress.
func (d *Dispatcher) Recovery(ctx context.Context, id string) (*Recovery, error) {
	if len(id) > 64 || !idPart(id) {
		return nil, ErrRecoveryNotFound
	}
	m, err := d.rdb.HGetAll(ctx, d.keys.Recovery(id)).Result()
	if err != nil {
		return nil, fmt.Errorf("read recovery: %w", err)
	}
	if len(m) == 0 {
		return nil, ErrRecoveryNotFound
	}
	num := func(f string) int64 { n, _ := strconv.ParseInt(m[f], 10, 64); return n }
	r := &Recovery{
		ID:         id,
		EndpointID: m[rcvEndpoint],
		Since:      lifecycle.At(time.UnixMilli(num(rcvSince))),
		Until:      lifecycle.At(time.UnixMilli(num(rcvUntil))),
		Status:     m[rcvStatus],
		Error:      m[rcvError],
		Scanned:    num(rcvScanned),
		Scheduled:  num(rcvScheduled),
		Done:       min(num(rcvDone), num(rcvScheduled)), // a page scheduled twice after a crash may count a delivery twice
		CreatedAt:  lifecycle.At(time.UnixMilli(num(rcvCreated))),
	}
	if r.Status == RecoveryDelivering && r.Done >= r.Scheduled {
		r.Status = RecoveryDone
	}
	return r, nil
}

// runRecovery is the handler of a recovery task: the walk, from where it
// stopped. It stops early, to go on later, when the dispatcher shuts down.
func (d *Dispatcher) runRecovery(ctx context.Context, t *asynq.Task) error {
	var p recoverPayload
	if err := json.Unmarshal(t.Payload(), &p); err != nil || p.ID == "" {
		return fmt.Errorf("malformed recovery task: %w", asynq.SkipRetry)
	}
	key := d.keys.Recovery(p.ID)
	m, err := d.rdb.HGetAll(ctx, key).Result()
	if err != nil {
		return fmt.Errorf("read recovery %s: %w", p.ID, err)
	}
	if len(m) == 0 || m[rcvStatus] != RecoveryRunning {
		return nil // expired, or already walked
	}
	ep := d.endpoints().endpoint(m[rcvEndpoint])
	switch {
	case ep == nil:
		return d.failRecovery(ctx, p.ID, "the endpoint was deleted")
	case ep.disabledNow():
		return d.failRecovery(ctx, p.ID, "the endpoint was disabled")
	}
	since, _ := strconv.ParseInt(m[rcvSince], 10, 64)
	until, _ := strconv.ParseInt(m[rcvUntil], 10, 64)
	for sh := range keyspace.Shard(keyspace.Shards) {
		pos := m[rcvPosition(sh)]
		if pos == rcvEnd {
			continue
		}
		start := strconv.FormatInt(since, 10) + "-0"
		if pos != "" {
			start = "(" + pos
		}
		for {
			select {
			case <-d.stopping.Done():
				return &deferError{reason: "recovery interrupted by shutdown"}
			default:
			}
			last, err := d.recoverPage(ctx, p.ID, ep, sh, start, strconv.FormatInt(until, 10))
			if err != nil {
				if ctx.Err() != nil {
					return &deferError{reason: "recovery interrupted"}
				}
				return err
			}
			if last == rcvEnd {
				break
			}
			start = "(" + last
		}
	}
	if err := d.rdb.HSet(ctx, key, rcvStatus, RecoveryDelivering).Err(); err != nil {
		return fmt.Errorf("finish recovery %s: %w", p.ID, err)
	}
	r, err := d.Recovery(ctx, p.ID)
	if err == nil {
		d.log.Info("webhook recovery walked the feed", "recovery_id", p.ID, "endpoint_id", ep.id,
			"scanned", r.Scanned, "scheduled", r.Scheduled)
	}
	return nil
}

// recoverPage walks one page of shard sh's outbox from start to end
// (XRANGE bounds): it schedules the deliveries the endpoint lacks and
// saves the position and counts. It returns the last entry walked, or
// rcvEnd when the shard's window is done.
func (d *Dispatcher) recoverPage(ctx context.Context, rid string, ep *endpoint, sh keyspace.Shard, start, end string) (string, error) {
	msgs, err := d.rdb.XRangeN(ctx, d.keys.Outbox(sh), start, end, recoveryPage).Result()
	if err != nil {
		return "", fmt.Errorf("recovery %s: read outbox: %w", rid, err)
	}
	key := d.keys.Recovery(rid)
	if len(msgs) == 0 {
		return rcvEnd, d.rdb.HSet(ctx, key, rcvPosition(sh), rcvEnd).Err()
	}
	var events []*lifecycle.Event
	for _, msg := range msgs {
		ev, err := lifecycle.ParseEvent(sh, msg)
		if err != nil {
			d.log.Warn("recovery skips a malformed outbox entry", "recovery_id", rid, "cursor", msg.ID)
			continue
		}
		if ep.wants(ev.Type) {
			events = append(events, ev)
		}
	}
	records := make([]*redis.StringCmd, len(events))
	if len(events) > 0 {
		pipe := d.rdb.Pipeline()
		for i, ev := range events {
			records[i] = pipe.HGet(ctx, d.keys.Deliveries(sh, ev.SessionID), recordField(ev.ID, ep.id))
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return "", fmt.Errorf("recovery %s: read deliveries: %w", rid, err)
		}
	}
	scheduled := 0
	for i, ev := range events {
		base, ok := recoverable(ev, ep.id, records[i])
		if !ok {
			continue
		}
		id := deliveryID(ev.SessionID, ev.ID, ep.id)
		p := &taskPayload{Delivery: id, Cursor: ev.Cursor, Base: base, Recovery: rid}
		if err := d.enqueue(ctx, ev, rid+":"+id, p, 0, d.schedule.retries()+1); err != nil {
			return "", fmt.Errorf("recovery %s: schedule %s: %w", rid, id, err)
		}
		scheduled++
	}
	last := msgs[len(msgs)-1].ID
	_, err = d.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, key, rcvPosition(sh), last)
		p.HIncrBy(ctx, key, rcvScanned, int64(len(msgs)))
		p.HIncrBy(ctx, key, rcvScheduled, int64(scheduled))
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("recovery %s: save position: %w", rid, err)
	}
	if len(msgs) < recoveryPage {
		return rcvEnd, d.rdb.HSet(ctx, key, rcvPosition(sh), rcvEnd).Err()
	}
	return last, nil
}

// recoverable reports whether a recovery schedules the delivery of ev to
// endpoint epID, given its record (a redis.Nil error: none), and the
// attempts it made so far. A delivery without a record is scheduled
// (the endpoint was disabled, or did not exist, when the event came); a
// dead one is; one that succeeded, or is pending or failed (its retry is
// scheduled), is not.
func recoverable(ev *lifecycle.Event, epID string, rec *redis.StringCmd) (base int, ok bool) {
	v, err := rec.Result()
	if errors.Is(err, redis.Nil) {
		return 0, true
	}
	if err != nil {
		return 0, false
	}
	dl, sum, err := parseRecord(ev.SessionID, recordField(ev.ID, epID), v)
	if err != nil || sum.Status != StatusDead {
		return 0, false
	}
	return dl.lastAttempt(), true
}

// failRecovery ends a recovery that cannot go on.
func (d *Dispatcher) failRecovery(ctx context.Context, id, why string) error {
	d.log.Warn("webhook recovery failed", "recovery_id", id, "err", why)
	if err := d.rdb.HSet(ctx, d.keys.Recovery(id), rcvStatus, RecoveryFailed, rcvError, why).Err(); err != nil {
		return err
	}
	return nil
}

// countDoneScript adds one to a field of a recovery's hash, unless the
// hash expired (a bare HINCRBY would make a new one without a time to live).
var countDoneScript = redis.NewScript(`if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HINCRBY', KEYS[1], ARGV[1], 1) end return 0`)

// recoveryDelivered counts a delivery that a recovery scheduled done,
// once it has ended.
func (d *Dispatcher) recoveryDelivered(ctx context.Context, p *taskPayload) {
	if p.Recovery == "" {
		return
	}
	err := countDoneScript.Run(context.WithoutCancel(ctx), d.rdb, []string{d.keys.Recovery(p.Recovery)}, rcvDone).Err()
	if err != nil && !errors.Is(err, redis.Nil) {
		d.log.Warn("count recovery delivery", "recovery_id", p.Recovery, "err", err.Error())
	}
}
