package dispatcher

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	_ "embed"
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
// recovery's hash (keyspace: rcv:<id>). A crash, a shutdown or a lost
// lease gives the task back to its queue and the walk goes on from the
// last page it saved; a run also stops by itself after recoveryBudget and
// goes back to the queue, so no run nears Asynq's deadline.
//
// Per page: the deliveries to schedule go into the recovery's scheduled
// set, then into Asynq (task id: recovery id and delivery id, so that a
// page scheduled again after a crash adds nothing), then the position is
// saved. A delivery that ends (sent, dead or dropped) goes into the ended
// set; the recovery is done when the walk is over and every scheduled
// delivery has ended. The sets make the counts exact whatever crashes in
// between; they are dropped, the counts kept, once it is done.
//
// A delivery task of a recovery reads its record again before its first
// attempt and sends only when the record is still missing or dead: one
// that the normal path delivered, or is delivering, since the walk passed
// is not sent again. A dead one is archived under the delivery's own id,
// like any dead delivery, so that a purge finds it.

// recoverTaskType is the Asynq task type of a recovery's walk.
const recoverTaskType = "sessiond:recover"

// Recovery statuses. A recovery is "running" while it walks the feed,
// "delivering" once it has scheduled everything and until the deliveries
// it scheduled have ended (succeeded, dead or dropped), then "done".
// "failed" says why it stopped in Recovery.Error.
const (
	RecoveryRunning    = "running"
	RecoveryDelivering = "delivering"
	RecoveryDone       = "done"
	RecoveryFailed     = "failed"
)

// Limits of a recovery.
const (
	recoveryPage       = 500 // outbox entries per page (one XRANGE, one pipeline of reads)
	recoveryIDPrefix   = "rcv_"
	recoveryTaskTries  = 25
	recoveryBudget     = 20 * time.Second // one run of the walk, then back to the queue
	recoveryTaskExpiry = recoveryBudget + time.Minute
	recoveryRetryDelay = 5 * time.Second // after a failed run
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
	if since.IsZero() || since.UnixMilli() < 0 || !since.Before(until) {
		return nil, invalidf("since: want a time after 1970 and before until (and before now)")
	}
	if _, err := d.enabledEndpoint(ctx, id); err != nil {
		return nil, err
	}
	b := make([]byte, 8)
	rand.Read(b) // never fails since Go 1.24
	rid := recoveryIDPrefix + hex.EncodeToString(b)
	key := d.keys.Recovery(rid)
	_, err := d.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, key, rcvEndpoint, id, rcvSince, since.UnixMilli(), rcvUntil, until.UnixMilli(),
			rcvStatus, RecoveryRunning, rcvScanned, 0, rcvCreated, now.UnixMilli())
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
	scheduledSet, endedSet := d.keys.RecoverySets(id)
	p := d.rdb.TxPipeline() // one slot: the recovery's keys share a tag
	all := p.HGetAll(ctx, d.keys.Recovery(id))
	scheduled, ended := p.SCard(ctx, scheduledSet), p.SCard(ctx, endedSet)
	if _, err := p.Exec(ctx); err != nil {
		return nil, fmt.Errorf("read recovery: %w", err)
	}
	m := all.Val()
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
		Scheduled:  scheduled.Val(),
		Done:       ended.Val(),
		CreatedAt:  lifecycle.At(time.UnixMilli(num(rcvCreated))),
	}
	if r.Status == RecoveryDone || r.Status == RecoveryFailed { // the sets are gone, the counts kept
		r.Scheduled, r.Done = num(rcvScheduled), num(rcvDone)
	}
	return r, nil
}

var (
	//go:embed scripts/recovery.lua
	recoveryLua    string
	recoveryScript = redis.NewScript(recoveryLua)
)

// recoveryOp runs one operation of recovery.lua on recovery id.
func (d *Dispatcher) recoveryOp(ctx context.Context, id string, args ...any) error {
	scheduled, ended := d.keys.RecoverySets(id)
	err := recoveryScript.Run(ctx, d.rdb, []string{d.keys.Recovery(id), scheduled, ended}, args...).Err()
	if err != nil {
		return fmt.Errorf("recovery %s: %v: %w", id, args[0], err)
	}
	return nil
}

// recoveryMember is how a recovery's sets name a delivery: short, and
// without the session id.
func recoveryMember(deliveryID string) string {
	sum := sha256.Sum256([]byte(deliveryID))
	return hex.EncodeToString(sum[:10])
}

// runRecovery is the handler of a recovery task: the walk, from where it
// stopped, for at most recoveryBudget. It stops early, to go on later,
// when the dispatcher shuts down.
func (d *Dispatcher) runRecovery(ctx context.Context, t *asynq.Task) error {
	var p recoverPayload
	if err := json.Unmarshal(t.Payload(), &p); err != nil || p.ID == "" {
		return fmt.Errorf("malformed recovery task: %w", asynq.SkipRetry)
	}
	err := d.walk(ctx, p.ID)
	var de *deferError
	if err == nil || errors.As(err, &de) || errors.Is(err, asynq.SkipRetry) {
		return err
	}
	retried, _ := asynq.GetRetryCount(ctx)
	if limit, ok := asynq.GetMaxRetry(ctx); ok && retried >= limit {
		if ferr := d.failRecovery(context.WithoutCancel(ctx), p.ID, "the walk kept failing: "+err.Error()); ferr != nil {
			d.log.Warn("fail recovery", "recovery_id", p.ID, "err", ferr.Error())
		}
	}
	return err
}

// walk goes on with recovery id's walk.
func (d *Dispatcher) walk(ctx context.Context, id string) error {
	m, err := d.rdb.HGetAll(ctx, d.keys.Recovery(id)).Result()
	if err != nil {
		return fmt.Errorf("read recovery %s: %w", id, err)
	}
	if len(m) == 0 || m[rcvStatus] != RecoveryRunning {
		return nil // expired, or already walked
	}
	// This replica may not have seen a change made through another one
	// yet (enabling the endpoint, say): look at the current version.
	if err := d.reloadEndpoints(ctx, false); err != nil {
		return err
	}
	ep := d.endpoints().endpoint(m[rcvEndpoint])
	switch {
	case ep == nil:
		return d.failRecovery(ctx, id, "the endpoint was deleted")
	case ep.disabledNow():
		return d.failRecovery(ctx, id, "the endpoint was disabled")
	}
	since, _ := strconv.ParseInt(m[rcvSince], 10, 64)
	until := m[rcvUntil]
	stopAt := time.Now().Add(recoveryBudget)
	for sh := range keyspace.Shard(keyspace.Shards) {
		pos := m[rcvPosition(sh)]
		if pos == rcvEnd {
			continue
		}
		start := strconv.FormatInt(since, 10) + "-0"
		if pos != "" {
			start = "(" + pos
		}
		for start != "" {
			select {
			case <-d.stopping.Done():
				return &deferError{reason: "recovery interrupted by shutdown"}
			default:
			}
			if time.Now().After(stopAt) {
				return &deferError{reason: "recovery goes on in its next run"}
			}
			next, err := d.recoverPage(ctx, id, ep, sh, start, until)
			if err != nil {
				if ctx.Err() != nil {
					return &deferError{reason: "recovery interrupted"}
				}
				return err
			}
			start = next
		}
	}
	if err := d.recoveryOp(ctx, id, "walked"); err != nil {
		return err
	}
	if r, err := d.Recovery(ctx, id); err == nil {
		d.log.Info("webhook recovery walked the feed", "recovery_id", id, "endpoint_id", ep.id,
			"scanned", r.Scanned, "scheduled", r.Scheduled)
	}
	return nil
}

// recoverPage walks one page of shard sh's outbox from start to end
// (XRANGE bounds): it schedules the deliveries the endpoint lacks and
// saves the position. It returns the next page's start, "" when the
// shard's window is done.
func (d *Dispatcher) recoverPage(ctx context.Context, rid string, ep *endpoint, sh keyspace.Shard, start, end string) (string, error) {
	msgs, err := d.rdb.XRangeN(ctx, d.keys.Outbox(sh), start, end, recoveryPage).Result()
	if err != nil {
		return "", fmt.Errorf("recovery %s: read outbox: %w", rid, err)
	}
	if len(msgs) == 0 {
		return "", d.recoveryOp(ctx, rid, "page", rcvPosition(sh), rcvEnd, 0)
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
	due, err := d.lacking(ctx, sh, ep.id, events)
	if err != nil {
		return "", fmt.Errorf("recovery %s: %w", rid, err)
	}
	if len(due) > 0 {
		members := make([]any, 0, len(due)+1)
		members = append(members, "schedule")
		for _, l := range due {
			members = append(members, recoveryMember(l.id))
		}
		if err := d.recoveryOp(ctx, rid, members...); err != nil {
			return "", err
		}
	}
	for _, l := range due {
		p := &taskPayload{Delivery: l.id, Cursor: l.ev.Cursor, Base: l.attempts, Recovery: rid}
		if err := d.enqueue(ctx, l.ev, rid+":"+l.id, p, 0, d.schedule.retries()+1); err != nil {
			return "", fmt.Errorf("recovery %s: schedule %s: %w", rid, l.id, err)
		}
	}
	last := msgs[len(msgs)-1].ID
	next := "(" + last
	if len(msgs) < recoveryPage {
		last, next = rcvEnd, ""
	}
	return next, d.recoveryOp(ctx, rid, "page", rcvPosition(sh), last, len(msgs))
}

// lack is a delivery a recovery schedules: its event, its id, and the
// attempts made so far.
type lack struct {
	ev       *lifecycle.Event
	id       string
	attempts int
}

// lacking returns the deliveries of events to endpoint epID that a
// recovery schedules: those without a record (the endpoint was disabled,
// or did not exist, when the event came) and the dead ones; not those
// that succeeded or are pending or failed (their retry is scheduled), nor
// those of a purged session. Every read's error counts: a page is never
// passed over on a partial answer.
func (d *Dispatcher) lacking(ctx context.Context, sh keyspace.Shard, epID string, events []*lifecycle.Event) ([]lack, error) {
	if len(events) == 0 {
		return nil, nil
	}
	pipe := d.rdb.Pipeline()
	records := make([]*redis.StringCmd, len(events))
	alive := make([]*redis.IntCmd, len(events))
	for i, ev := range events {
		records[i] = pipe.HGet(ctx, d.keys.Deliveries(sh, ev.SessionID), recordField(ev.ID, epID))
		alive[i] = pipe.Exists(ctx, d.keys.Session(sh, ev.SessionID))
	}
	_, _ = pipe.Exec(ctx) // each command's error is looked at below
	var out []lack
	for i, ev := range events {
		v, err := records[i].Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("read delivery record: %w", err)
		}
		n, aerr := alive[i].Result()
		if aerr != nil {
			return nil, fmt.Errorf("read session: %w", aerr)
		}
		if n == 0 {
			continue // purged: nothing is sent about it
		}
		id := deliveryID(ev.SessionID, ev.ID, epID)
		if errors.Is(err, redis.Nil) {
			out = append(out, lack{ev: ev, id: id})
			continue
		}
		dl, sum, perr := parseRecord(ev.SessionID, recordField(ev.ID, epID), v)
		if perr == nil && sum.Status == StatusDead {
			out = append(out, lack{ev: ev, id: id, attempts: dl.lastAttempt()})
		}
	}
	return out, nil
}

// failRecovery ends a recovery that cannot go on.
func (d *Dispatcher) failRecovery(ctx context.Context, id, why string) error {
	d.log.Warn("webhook recovery failed", "recovery_id", id, "err", why)
	return d.recoveryOp(ctx, id, "fail", why)
}

// recoveryDelivered counts a delivery that a recovery scheduled done,
// once it has ended.
func (d *Dispatcher) recoveryDelivered(ctx context.Context, p *taskPayload) {
	if p.Recovery == "" {
		return
	}
	if err := d.recoveryOp(context.WithoutCancel(ctx), p.Recovery, "done", recoveryMember(p.Delivery)); err != nil {
		d.log.Warn("count recovery delivery", "recovery_id", p.Recovery, "err", err.Error())
	}
}
