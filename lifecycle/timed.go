package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sessiond/sessiond/internal/keyspace"
)

// DueKey is the due index of one kind of timed work in one shard: a sorted
// set of session ids scored by due time (unix ms). The scheduler claims
// from it.
func (s *Service) DueKey(sh keyspace.Shard, kind WorkKind) string {
	return s.keys.Due(sh, string(kind))
}

// dropDue removes session id's entries from the due indexes of kinds once
// its record is gone (its TTL ran out before a purge ran). Like every
// write it goes through the commit, guarded on the record's absence, so
// it never drops the work of a session that exists: a deleted one's own
// commits keep its entries right.
func (s *Service) dropDue(ctx context.Context, id string, kinds ...WorkKind) error {
	sh, ok := ShardOfSession(id)
	if !ok {
		return nil
	}
	t := newTx()
	t.expectVersion(s.keys.Session(sh, id), 0)
	for _, kind := range kinds {
		t.op("ZREM", s.DueKey(sh, kind), id)
	}
	return s.repair(ctx, t, "drop due entries")
}

// repair commits t, a correction of an index guarded on what it corrects:
// a conflict means a change has just written the index right, and a
// replica that has not acknowledged it yet loses nothing that matters.
func (s *Service) repair(ctx context.Context, t *tx, op string) error {
	err := s.commit(ctx, t)
	if err == nil || errors.Is(err, errConflict) || errors.Is(err, ErrNotDurable) {
		return nil
	}
	return fmt.Errorf("%s: %w", op, err)
}

// Run does one piece of timed work if it is due; it reports whether it
// changed anything. It is idempotent: work that is not due, already done or
// superseded is left alone.
func (s *Service) Run(ctx context.Context, kind WorkKind, id string) (bool, error) {
	switch kind {
	case WorkExpire:
		return s.ExpireDue(ctx, id)
	case WorkRedact:
		return s.redactDue(ctx, id)
	case WorkPurge:
		return s.purge(ctx, id)
	}
	return false, fmt.Errorf("run: unknown work kind %q", kind)
}

// redactDue redacts a terminal session whose retention has ended.
func (s *Service) redactDue(ctx context.Context, id string) (bool, error) {
	due := func(r *record, now time.Time) bool {
		return r.Status.Terminal() && !now.Before(s.redactAt(r))
	}
	m, err := s.mutate(ctx, id, options{}, mutateSpec{readDetails: true}, redact(due))
	if errors.Is(err, ErrNotFound) {
		// Deleted or gone: nothing to redact; drop the stale entry.
		return false, s.dropDue(ctx, id, WorkRedact)
	}
	if err != nil {
		return false, fmt.Errorf("redact due session: %w", err)
	}
	return m.changed, nil
}

// purge removes every key of a session whose purge time has come: a
// deleted session PurgeAfter after its delete, any other RecordRetention
// after its last change. Its events stay in the outbox, reduced; the
// outbox gets an EventPurged entry, by which the dispatcher drops the
// session's deliveries.
func (s *Service) purge(ctx context.Context, id string) (bool, error) {
	sh, ok := ShardOfSession(id)
	if !ok {
		return false, nil
	}
	for attempt := 0; attempt < maxTxAttempts; attempt++ {
		if attempt > 0 {
			if err := backoff(ctx); err != nil {
				return false, err
			}
		}
		purged, err := s.purgeOnce(ctx, sh, id)
		if !errors.Is(err, errConflict) {
			return purged, err
		}
	}
	return false, ErrBusy
}

func (s *Service) purgeOnce(ctx context.Context, sh keyspace.Shard, id string) (bool, error) {
	now := s.now()
	k := s.keys
	r, err := s.read(ctx, sh, id, options{}, true)
	if errors.Is(err, ErrNotFound) {
		// Gone already (its TTL ran out): drop stale due entries.
		return false, s.dropDue(ctx, id, WorkKinds...)
	}
	if err != nil {
		return false, fmt.Errorf("purge session: %w", err)
	}
	if at := s.purgeDue(r); now.Before(at) {
		// Not due (the session changed since the entry was claimed):
		// put the entry back at its time, unless the session changed
		// again meanwhile (its commit did).
		t := newTx()
		t.expectVersion(k.Session(sh, id), r.Version)
		t.op("ZADD", s.DueKey(sh, WorkPurge), at.UnixMilli(), id)
		return false, s.repair(ctx, t, "purge session")
	}
	s.eraseLinks(ctx, r.Links)
	t := newTx()
	t.expectVersion(k.Session(sh, id), r.Version)
	for _, key := range []string{k.Session(sh, id), k.Personal(sh, id), k.EventDetails(sh, id)} {
		t.op("DEL", key)
	}
	if r.TokenHash != "" {
		t.op("DEL", k.Token(sh, r.TokenHash))
	}
	t.op("DELIFEQ", k.Ref(sh, r.RefID), id)
	member := indexMember(&r.Session)
	t.op("ZREM", k.IndexAll(sh), member)
	t.op("ZREM", k.IndexRef(sh, r.RefID), member)
	t.op("ZREM", k.IndexStatus(sh, string(r.Status)), member)
	for _, kind := range WorkKinds {
		t.op("ZREM", s.DueKey(sh, kind), id)
	}
	ev := &Event{ID: newEventID(), Type: EventPurged, SessionID: id, Status: r.Status, Sequence: r.Seq, Timestamp: At(now)}
	minID := fmt.Sprint(now.Add(-s.cfg.EventsRetention).UnixMilli())
	t.op("XADD", k.Outbox(sh), ev.streamArgs(minID)...)
	t.extendTo(k.Outbox(sh), now, now.Add(s.cfg.EventsRetention))
	if err := s.commit(ctx, t); err != nil && !errors.Is(err, ErrNotDurable) {
		return false, fmt.Errorf("purge session: %w", err)
	}
	s.eraseLinks(ctx, r.Links)
	return true, nil
}
