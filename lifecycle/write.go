package lifecycle

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"time"
)

// change is one session's part of a commit: the record before (nil when
// new) and after, the events it appends and the token it issues.
type change struct {
	old, new  *record
	oldToken  string // token hash to revoke
	newToken  string // token hash to store ("" keeps or drops, see write)
	events    []string
	refActive bool // the ref key points at this session afterwards
	refOwned  bool // the ref key pointed at this session before
	// details replaces the session's event details (a redaction); nil
	// leaves the existing ones.
	details map[string]string
}

// purgeAt is when a session's record leaves Redis (its keys' TTL):
// PurgeAfter after a delete, otherwise RecordRetention after its last
// change.
func (s *Service) purgeAt(r *record) time.Time {
	if r.DeletedAt != nil {
		return r.DeletedAt.Add(s.cfg.PurgeAfter)
	}
	return r.RetainFrom.Add(s.cfg.RecordRetention)
}

// purgeDue is when the purge of a session falls due: PurgeLead before its
// TTL ends, so that the purge still finds the record (whose links and
// deliveries it must erase) when the sweep runs.
func (s *Service) purgeDue(r *record) time.Time { return s.purgeAt(r).Add(-s.cfg.PurgeLead) }

// redactAt is when a terminal session's personal data is redacted.
func (s *Service) redactAt(r *record) time.Time { return r.RetainFrom.Add(s.cfg.Retention) }

// write adds to t everything that makes c true in Redis, and the guard
// that the session is still as read.
func (s *Service) write(t *tx, c *change, now time.Time) error {
	r := c.new
	id, sh := r.ID, r.shard()
	k := s.keys
	var oldVersion int64
	if c.old != nil {
		oldVersion = c.old.Version
	}
	recKey := k.Session(sh, id)
	t.expectVersion(recKey, oldVersion)
	r.Version = oldVersion + 1

	// Tokens: a new one replaces the old; leaving the active statuses or
	// being deleted revokes it.
	revoke := c.newToken != "" || r.DeletedAt != nil || !r.Status.Active()
	switch {
	case c.newToken != "":
		r.TokenHash = c.newToken
	case revoke:
		r.TokenExpiresAt, r.TokenHash = nil, ""
	}

	// Events first: their sequence numbers are part of the record.
	purge := s.purgeAt(r)
	if len(c.events) > 0 || c.details != nil {
		evKey := k.EventDetails(sh, id)
		fields := make([]any, 0, 2+2*len(c.details)+2*len(c.events))
		if len(c.events) > 0 {
			// The constant part goes with every event, not only the
			// first: the hash lives EventsRetention past the last event,
			// so a session quiet for longer (one in review) finds it gone.
			fields = append(fields, detailsConstant, constantDetails(r))
		}
		for f, v := range c.details {
			fields = append(fields, f, v)
		}
		minID := strconv.FormatInt(now.Add(-s.cfg.EventsRetention).UnixMilli(), 10)
		for _, typ := range c.events {
			r.Seq++
			ev := newEvent(typ, r, now)
			detail, err := eventDetails(r)
			if err != nil {
				return err
			}
			t.op("XADD", k.Outbox(sh), ev.streamArgs(minID)...)
			fields = append(fields, ev.ID, detail)
		}
		if len(c.events) > 0 {
			// The outbox outlives its newest entry by EventsRetention,
			// as each entry does.
			t.extendTo(k.Outbox(sh), now, now.Add(s.cfg.EventsRetention))
		}
		t.op("HSET", evKey, fields...)
		if r.DeletedAt == nil {
			t.extendTo(evKey, now, now.Add(s.cfg.EventsRetention))
		} else {
			// A deleted session's details (tags, the decision's reason)
			// go at its purge, whether or not the purge runs; the HSET
			// above may have made the key afresh, without a TTL.
			t.expireAt(evKey, now, purge)
		}
	}

	body, err := encodeRecord(r)
	if err != nil {
		return err
	}
	t.setUntil(recKey, encodeStored(r.Version, body), now, purge)

	piiKey := k.Personal(sh, id)
	if r.DeletedAt == nil && r.RedactedAt == nil && (len(r.Person) > 0 || len(r.Metadata) > 0) {
		pii, err := json.Marshal(personal{Person: r.Person, Metadata: r.Metadata})
		if err != nil {
			return fmt.Errorf("encode session %s personal data: %w", id, err)
		}
		t.setUntil(piiKey, pii, now, s.redactAt(r))
	} else if c.old != nil {
		t.op("DEL", piiKey)
	}

	// Indexes.
	member := indexMember(&r.Session)
	all, byRef := k.IndexAll(sh), k.IndexRef(sh, r.RefID)
	switch {
	case r.DeletedAt != nil:
		t.op("ZREM", all, member)
		t.op("ZREM", byRef, member)
		t.op("ZREM", k.IndexStatus(sh, string(r.Status)), member)
		if c.old != nil && c.old.Status != r.Status {
			t.op("ZREM", k.IndexStatus(sh, string(c.old.Status)), member)
		}
	default:
		if c.old == nil {
			t.op("ZADD", all, 0, member)
			t.op("ZADD", byRef, 0, member)
		} else if c.old.Status != r.Status {
			t.op("ZREM", k.IndexStatus(sh, string(c.old.Status)), member)
		}
		byStatus := k.IndexStatus(sh, string(r.Status))
		if c.old == nil || c.old.Status != r.Status {
			t.op("ZADD", byStatus, 0, member)
		}
		// Every index lives as long as its longest-lived member: an
		// index no write touches for a retention period is all stale.
		t.extendTo(all, now, purge)
		t.extendTo(byStatus, now, purge)
		t.extendTo(byRef, now, purge)
	}
	refKey := k.Ref(sh, r.RefID)
	switch {
	case c.refActive:
		t.setUntil(refKey, id, now, purge)
	case c.refOwned:
		t.op("DEL", refKey)
	}

	// Due indexes. The expiry's comes last: every write of a session
	// touches it (an add while pending, else a removal), so it is the
	// commit's last typed write.
	redactDue := k.Due(sh, string(WorkRedact))
	if r.DeletedAt == nil && r.Status.Terminal() && r.RedactedAt == nil {
		t.op("ZADD", redactDue, s.redactAt(r).UnixMilli(), id)
		t.extendTo(redactDue, now, purge)
	} else if c.old != nil {
		t.op("ZREM", redactDue, id)
	}
	// A pending session with a time limit needs no purge entry yet: its
	// expiry, or whatever moves it on first, is a write that adds one. An
	// entry left from before is harmless (the purge puts a session that
	// is not due back at its time).
	pendingTimed := r.DeletedAt == nil && r.Status.Pending() && r.ExpiresAt != nil
	if !pendingTimed {
		purgeDue := k.Due(sh, string(WorkPurge))
		t.op("ZADD", purgeDue, s.purgeDue(r).UnixMilli(), id)
		t.extendTo(purgeDue, now, purge)
	}
	expireDue := k.Due(sh, string(WorkExpire))
	if pendingTimed {
		t.op("ZADD", expireDue, r.ExpiresAt.UnixMilli(), id)
		t.extendTo(expireDue, now, purge)
	} else if c.old != nil {
		t.op("ZREM", expireDue, id)
	}

	if revoke && c.oldToken != "" {
		t.op("DEL", k.Token(sh, c.oldToken))
	}
	if c.newToken != "" {
		t.setUntil(k.Token(sh, c.newToken), id, now, r.TokenExpiresAt.Time)
	}
	return nil
}

// afterCommit tells the observer of a committed status change and the
// timer of the timed work it set.
func (s *Service) afterCommit(ctx context.Context, c *change) {
	r := c.new
	var from Status
	if c.old != nil {
		from = c.old.Status
	}
	if o := s.cfg.Observer; o != nil && from != r.Status {
		o.Transitioned(from, r.Status)
		if c.old != nil && c.old.ExpiresAt != nil && r.ExpiredFrom == from && r.UpdatedAt.Compare(c.old.ExpiresAt.Time) >= 0 {
			o.ObserveExpiryLag(r.UpdatedAt.Sub(c.old.ExpiresAt.Time))
		}
	}
	if len(c.events) > 0 && s.cfg.Logger.Enabled(ctx, slog.LevelDebug) {
		s.cfg.Logger.LogAttrs(ctx, slog.LevelDebug, "session changed",
			slog.String("session_id", r.ID), slog.String("from", string(from)),
			slog.String("to", string(r.Status)), slog.Any("events", c.events),
			slog.Int64("version", r.Version))
	}
	if s.cfg.Timer == nil {
		return
	}
	if r.DeletedAt == nil && r.Status.Pending() && r.ExpiresAt != nil {
		s.cfg.Timer.Due(Work{Kind: WorkExpire, SessionID: r.ID, At: r.ExpiresAt.Time})
	}
}

// issueToken gives the session of c a fresh token that expires TokenTTL
// after now, and returns it; c keeps only its hash.
func (s *Service) issueToken(c *change, now time.Time) string {
	token, hash := newToken(c.new.shard())
	c.newToken = hash
	c.new.TokenExpiresAt = deadline(now.Add(s.cfg.TokenTTL)).Ptr()
	return token
}
