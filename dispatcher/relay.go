package dispatcher

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/internal/keyspace"
	"github.com/sessiond/sessiond/lifecycle"
)

// The relay moves events from the shards' outbox streams to the workers.
// Each replica reads every shard's stream through one consumer group (all
// shards in one read where they share a Redis, see relayGroups), so an
// entry goes to one replica. For each entry and each endpoint that wants it
// the relay hands a first attempt to the worker pool; the worker that
// records the entry's last delivery acknowledges the entry in the same
// script. An entry whose replica died before that stays pending in the
// group and is claimed by another replica's maintenance loop after
// Config.ClaimIdle; its deliveries that already have a record are not made
// again. A live replica keeps its entries' idle time low while it delivers
// them (XCLAIM JUSTID), so a slow receiver does not get them claimed.

const (
	// relayBlock is how long one XREADGROUP waits for new entries; it
	// returns at once when one arrives. It bounds how long Shutdown waits
	// for the relays, and sets their idle cost (one read per relay per
	// relayBlock: one relay on one Redis, one per shard on a cluster).
	relayBlock = 2 * time.Second
	// maintainEvery is the longest period of the maintenance loop. It is
	// shorter when Config.ClaimIdle is under 4 s (maintainPeriod): the
	// loop keeps this process's entries in flight fresh, and an entry can
	// go two periods without being refreshed, which must stay well under
	// ClaimIdle or a live replica's entries get claimed and sent twice.
	maintainEvery = time.Second
	// consumerCleanupEvery and consumerIdle: consumers of the outbox group
	// with nothing pending and idle that long are removed (they were
	// replicas that stopped).
	consumerCleanupEvery = time.Minute
	consumerIdle         = time.Hour
)

// entry is one outbox entry being delivered.
type entry struct {
	shard keyspace.Shard
	id    string
	left  atomic.Int32 // deliveries not yet recorded
}

// job is one first attempt for a worker.
type job struct {
	entry *entry
	ev    *lifecycle.Event
	ep    *endpoint
	body  []byte
}

// relayGroups splits the shards among the relays: one relay reads every
// shard with one XREADGROUP when they share a Redis (a round trip carries
// every shard's new entries, and idle costs one read per relayBlock); on a
// cluster, where a command's keys must share a slot, each shard has its
// own relay.
func relayGroups(rdb redis.UniversalClient) [][]keyspace.Shard {
	all := make([]keyspace.Shard, keyspace.Shards)
	for i := range all {
		all[i] = keyspace.Shard(i)
	}
	if _, ok := rdb.(*redis.ClusterClient); !ok {
		return [][]keyspace.Shard{all}
	}
	out := make([][]keyspace.Shard, len(all))
	for i, sh := range all {
		out[i] = []keyspace.Shard{sh}
	}
	return out
}

// batch is what one read returned from one shard's outbox.
type batch struct {
	shard keyspace.Shard
	msgs  []redis.XMessage
}

// relay reads the new outbox entries of shards until ctx is done.
func (d *Dispatcher) relay(ctx context.Context, shards []keyspace.Shard) {
	bo := loopBackoff()
	streams := make([]string, 0, 2*len(shards))
	shardOf := make(map[string]keyspace.Shard, len(shards))
	for _, sh := range shards {
		streams = append(streams, d.keys.Outbox(sh))
		shardOf[d.keys.Outbox(sh)] = sh
	}
	for range shards {
		streams = append(streams, ">")
	}
	groupsReady := false
	if d.waitEndpoints(ctx) != nil {
		return
	}
	for ctx.Err() == nil {
		if !groupsReady {
			if err := d.ensureGroups(ctx, streams[:len(shards)]); err != nil {
				d.pause(ctx, bo, "create outbox consumer group", err)
				continue
			}
			groupsReady = true
		}
		if !d.awaitRoom(ctx) {
			return
		}
		res, err := d.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group:    relayGroup,
			Consumer: d.consumer,
			Streams:  streams,
			Count:    int64(d.cfg.RelayBatch),
			Block:    relayBlock,
		}).Result()
		switch {
		case errors.Is(err, redis.Nil):
			bo.Reset()
			continue
		case err != nil:
			if ctx.Err() != nil {
				return
			}
			if isNoGroup(err) {
				// A stream expired empty, and its group with it.
				groupsReady = false
			}
			d.pause(ctx, bo, "read outbox", err)
			continue
		}
		batches := make([]batch, 0, len(res))
		for _, st := range res {
			if len(st.Messages) > 0 {
				batches = append(batches, batch{shard: shardOf[st.Stream], msgs: st.Messages})
			}
		}
		if err := d.handle(ctx, batches, false); err != nil && ctx.Err() == nil {
			d.pause(ctx, bo, "relay events", err)
			continue
		}
		bo.Reset()
	}
}

// roomPoll bounds a relay's wait for room in the endpoints' lines, so
// that an endpoint added, enabled or tripped meanwhile is seen.
const roomPoll = 100 * time.Millisecond

// awaitRoom waits while every endpoint that takes deliveries has a long
// line of first attempts (limiter.saturated): what the relay would read
// then could only be deferred through Asynq, whereas left in the outbox
// it is read at full speed once the endpoints catch up. An endpoint whose
// breaker is open does not hold the relay: its deliveries are deferred
// with the breaker's wait, as the retry schedule bounds an outage. It
// returns false once ctx is done.
func (d *Dispatcher) awaitRoom(ctx context.Context) bool {
	for d.saturated() {
		t := time.NewTimer(roomPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-d.room:
		case <-t.C:
		}
		t.Stop()
	}
	return ctx.Err() == nil
}

// saturated reports whether every endpoint that takes deliveries is
// saturated (and there is at least one).
func (d *Dispatcher) saturated() bool {
	found := false
	for _, ep := range d.endpoints().order {
		if ep.disabledNow() {
			continue
		}
		if ep.breaker.isOpen() || !ep.limit.saturated() {
			return false
		}
		found = true
	}
	return found
}

// ensureGroups makes sure every stream has the outbox consumer group.
func (d *Dispatcher) ensureGroups(ctx context.Context, streams []string) error {
	for _, stream := range streams {
		if err := d.ensureGroup(ctx, stream); err != nil {
			return err
		}
	}
	return nil
}

// ensureGroup creates the outbox consumer group of a stream, reading from
// the oldest kept event, unless it exists.
//
// A stream it makes (a shard without events yet) gets the TTL an event
// would give it, EventsRetention: every key carries one. When it expires
// empty, the next read finds no group and makes it again; an event added
// meanwhile makes a stream without the group, which is then read from 0.
func (d *Dispatcher) ensureGroup(ctx context.Context, stream string) error {
	err := d.rdb.XGroupCreateMkStream(ctx, stream, relayGroup, "0").Err()
	switch {
	case err == nil:
		return d.rdb.ExpireNX(ctx, stream, d.cfg.Retention).Err()
	case strings.HasPrefix(err.Error(), "BUSYGROUP"):
		return nil
	default:
		return err
	}
}

func isNoGroup(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "NOGROUP")
}

// handle turns batches of outbox entries into first attempts for the
// workers, with one read of the events' details and one acknowledgement
// of the entries nobody wants, whatever the shards. claimed entries were
// another consumer's: their deliveries that have a record already are
// left out. An error leaves the entries not yet handed over pending, for a
// later claim.
func (d *Dispatcher) handle(ctx context.Context, batches []batch, claimed bool) error {
	acks := map[keyspace.Shard][]string{}
	var events []*lifecycle.Event
	for _, b := range batches {
		for _, m := range b.msgs {
			ev, err := lifecycle.ParseEvent(b.shard, m)
			if err != nil {
				d.log.Error("skipping malformed outbox entry", "cursor", m.ID, "err", err.Error())
				acks[b.shard] = append(acks[b.shard], m.ID)
				continue
			}
			if ev.Type == lifecycle.EventPurged {
				if err := d.dropSession(ctx, b.shard, ev.SessionID); err != nil {
					return err
				}
				acks[b.shard] = append(acks[b.shard], m.ID)
				continue
			}
			if len(d.wanting(ev.Type)) == 0 {
				acks[b.shard] = append(acks[b.shard], m.ID)
				continue
			}
			events = append(events, ev)
		}
	}
	data, full, err := d.events.EventDetails(ctx, events)
	if err != nil {
		return err
	}
	var done map[string]bool // claimed entries: the deliveries with a record
	if claimed {
		if done, err = d.recorded(ctx, events); err != nil {
			return err
		}
	}
	var jobs []*job
	for i, ev := range events {
		if !full[i] {
			d.stats.dropped.Add(1) // purged meanwhile
			acks[ev.Shard] = append(acks[ev.Shard], ev.Cursor)
			continue
		}
		body, err := ev.WebhookBody(data[i])
		if err != nil {
			return err
		}
		e := &entry{shard: ev.Shard, id: ev.Cursor}
		var eps []*endpoint
		for _, ep := range d.wanting(ev.Type) {
			if !done[recordField(ev.ID, ep.id)] {
				eps = append(eps, ep)
			}
		}
		if len(eps) == 0 {
			acks[ev.Shard] = append(acks[ev.Shard], ev.Cursor)
			continue
		}
		e.left.Store(int32(len(eps)))
		for _, ep := range eps {
			jobs = append(jobs, &job{entry: e, ev: ev, ep: ep, body: body})
		}
	}
	if len(acks) > 0 {
		_, err := d.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for sh, ids := range acks {
				p.XAck(ctx, d.keys.Outbox(sh), relayGroup, ids...)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	for _, j := range jobs {
		d.flight.add(j.entry.shard, j.entry.id)
		select {
		case d.jobs <- j:
		case <-ctx.Done():
			d.flight.remove(j.entry.shard, j.entry.id) // a claim takes it over
			return ctx.Err()
		}
	}
	return nil
}

// wanting lists the endpoints that get events of typ.
func (d *Dispatcher) wanting(typ string) []*endpoint {
	var out []*endpoint
	for _, ep := range d.endpoints().order {
		if ep.wants(typ) && !ep.disabledNow() {
			out = append(out, ep)
		}
	}
	return out
}

// recorded returns which deliveries of events have a record already.
func (d *Dispatcher) recorded(ctx context.Context, events []*lifecycle.Event) (map[string]bool, error) {
	p := d.rdb.Pipeline()
	cmds := make([]*redis.StringSliceCmd, len(events))
	for i, ev := range events {
		cmds[i] = p.HKeys(ctx, d.keys.Deliveries(ev.Shard, ev.SessionID))
	}
	if _, err := p.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	done := map[string]bool{}
	for _, c := range cmds {
		for _, f := range c.Val() {
			done[f] = true
		}
	}
	return done, nil
}

// dropSession drops the deliveries of a purged session: its retry,
// deferred, replay and dead tasks leave Asynq, and its records go. Nothing
// named after the session stays.
func (d *Dispatcher) dropSession(ctx context.Context, sh keyspace.Shard, sessionID string) error {
	ds, sums, err := d.store.list(ctx, sh, sessionID)
	if err != nil {
		return err
	}
	queue := d.queueOf(sh)
	for _, dl := range ds {
		ids := []string{dl.ID}
		for n := int64(1); n <= sums[dl.ID].Replays; n++ {
			ids = append(ids, replayTaskID(dl.ID, n))
		}
		for _, tid := range ids {
			err := d.inspector.DeleteTask(queue, tid)
			if err != nil && !errors.Is(err, asynq.ErrTaskNotFound) && !errors.Is(err, asynq.ErrQueueNotFound) {
				// An active task cannot be deleted; it finds the session
				// gone and stops. Anything else: try the entry again.
				if !strings.Contains(err.Error(), "active") {
					return err
				}
			}
		}
		if dl.Status != StatusSucceeded && dl.Status != StatusDead {
			d.stats.dropped.Add(1)
		}
	}
	if err := d.rdb.Del(ctx, d.keys.Deliveries(sh, sessionID)).Err(); err != nil {
		return err
	}
	if len(ds) > 0 {
		d.log.Debug("dropped the deliveries of a purged session", "session_id", sessionID, "deliveries", len(ds))
	}
	return nil
}

// maintainPeriod is the period of the maintenance loop for a ClaimIdle:
// at most a quarter of it, and at most maintainEvery.
func maintainPeriod(claimIdle time.Duration) time.Duration {
	return min(maintainEvery, claimIdle/4)
}

// maintain runs the periodic work until ctx is done: it refreshes the
// disabled marks, keeps this process's entries in flight from going
// stale, claims the entries a dead replica left (every period, so that
// one is claimed within ClaimIdle plus a period), gives orphaned tasks
// back and removes stopped consumers.
func (d *Dispatcher) maintain(ctx context.Context) {
	t := time.NewTicker(d.tick)
	defer t.Stop()
	var lastCleanup time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		d.touch(ctx)
		for _, q := range d.queues {
			n, err := requeueOrphans(ctx, d.rdb, q, d.cfg.OrphanAfter, time.Now())
			if err != nil && ctx.Err() == nil {
				d.log.Debug("requeue orphaned deliveries", "err", err.Error())
			}
			if n > 0 {
				d.stats.requeued.Add(int64(n))
				d.log.Warn("gave back deliveries whose worker died", "deliveries", n)
			}
		}
		for sh := range keyspace.Shards {
			d.claim(ctx, keyspace.Shard(sh))
		}
		now := time.Now()
		if now.Sub(lastCleanup) >= consumerCleanupEvery {
			lastCleanup = now
			for sh := range keyspace.Shards {
				d.removeStoppedConsumers(ctx, d.keys.Outbox(keyspace.Shard(sh)))
			}
		}
	}
}

// touch resets the idle time of the entries this process has been
// delivering for a while, so that no other replica claims them.
func (d *Dispatcher) touch(ctx context.Context) {
	for sh, ids := range d.flight.stale(time.Now().Add(-d.tick)) {
		err := d.rdb.XClaimJustID(ctx, &redis.XClaimArgs{
			Stream: d.keys.Outbox(sh), Group: relayGroup, Consumer: d.consumer, MinIdle: 0, Messages: ids,
		}).Err()
		if err != nil && ctx.Err() == nil {
			d.log.Debug("keep outbox entries", "err", err.Error())
		}
	}
}

// claim takes over shard sh's outbox entries left unacknowledged for
// ClaimIdle and relays them.
func (d *Dispatcher) claim(ctx context.Context, sh keyspace.Shard) {
	stream := d.keys.Outbox(sh)
	start := "0-0"
	for ctx.Err() == nil {
		msgs, next, err := d.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{
			Stream:   stream,
			Group:    relayGroup,
			Consumer: d.consumer,
			MinIdle:  d.cfg.ClaimIdle,
			Start:    start,
			Count:    int64(d.cfg.RelayBatch),
		}).Result()
		if err != nil {
			if ctx.Err() == nil && !isNoGroup(err) {
				d.log.Debug("claim outbox entries", "err", err.Error())
			}
			return
		}
		if len(msgs) > 0 {
			d.log.Info("claimed outbox entries of a stopped relay", "entries", len(msgs))
			if err := d.handle(ctx, []batch{{shard: sh, msgs: msgs}}, true); err != nil {
				if ctx.Err() == nil {
					d.log.Warn("relay claimed events", "err", err.Error())
				}
				return
			}
		}
		if next == "" || next == "0-0" {
			return
		}
		start = next
	}
}

// removeStoppedConsumers deletes group consumers with nothing pending that
// have been idle for consumerIdle.
func (d *Dispatcher) removeStoppedConsumers(ctx context.Context, stream string) {
	cs, err := d.rdb.XInfoConsumers(ctx, stream, relayGroup).Result()
	if err != nil {
		return
	}
	for _, c := range cs {
		if c.Name != d.consumer && c.Pending == 0 && c.Idle >= consumerIdle {
			_ = d.rdb.XGroupDelConsumer(ctx, stream, relayGroup, c.Name).Err()
		}
	}
}

// flight is the set of outbox entries this process is delivering, with
// when each was last kept fresh.
type flight struct {
	mu sync.Mutex
	m  [keyspace.Shards]map[string]time.Time
}

func newFlight() *flight {
	f := &flight{}
	for i := range f.m {
		f.m[i] = map[string]time.Time{}
	}
	return f
}

func (f *flight) add(sh keyspace.Shard, id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.m[sh][id]; !ok {
		f.m[sh][id] = time.Now()
	}
}

func (f *flight) remove(sh keyspace.Shard, id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.m[sh], id)
}

// stale returns the entries last kept fresh before t, by shard, and marks
// them fresh now.
func (f *flight) stale(t time.Time) map[keyspace.Shard][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[keyspace.Shard][]string{}
	now := time.Now()
	for sh, m := range f.m {
		for id, at := range m {
			if at.Before(t) {
				out[keyspace.Shard(sh)] = append(out[keyspace.Shard(sh)], id)
				m[id] = now
			}
		}
	}
	return out
}

// loopBackoff paces a loop's retries after errors: 50ms growing to 2s.
func loopBackoff() *backoff.ExponentialBackOff {
	return backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(50*time.Millisecond),
		backoff.WithMaxInterval(2*time.Second),
		backoff.WithMaxElapsedTime(0),
	)
}

// pause logs a loop's error and waits its backoff (or until ctx is done).
func (d *Dispatcher) pause(ctx context.Context, bo *backoff.ExponentialBackOff, what string, err error) {
	wait := bo.NextBackOff()
	d.log.Warn(what, "err", err.Error(), "retry_in", wait.String())
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
