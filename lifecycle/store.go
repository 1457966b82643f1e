package lifecycle

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// record is a session as stored: the public object without its personal
// fields, plus what the store needs to change it safely.
type record struct {
	Session
	// Version counts the record's writes; the expiry task id carries it.
	Version int64 `json:"version"`
	// Seq is the sequence number of the session's last event.
	Seq int64 `json:"seq"`
	// ExpiredFrom is the pending status an expired session had, so that a
	// resume returns to it.
	ExpiredFrom Status `json:"expired_from,omitempty"`
	// RetainFrom is when retention starts counting: the last change other
	// than a redaction.
	RetainFrom Time `json:"retain_from"`
	// DeletedAt marks a deleted session: gone from every read, data purged
	// at DeletedAt+PurgeAfter.
	DeletedAt *Time `json:"deleted_at,omitempty"`
	// TokenExpiresAt is when the current token stops working, on the
	// injected clock; nil when there is none. The token keys' Redis TTL
	// only cleans up after it.
	TokenExpiresAt *Time `json:"token_expires_at,omitempty"`
	// TokenHash is the sha256 of the current token, "" when there is none;
	// the token key maps it back to the session.
	TokenHash string `json:"token_hash,omitempty"`
}

// personal is what the pii key holds.
type personal struct {
	Person   json.RawMessage `json:"person,omitempty"`
	Metadata json.RawMessage `json:"metadata,omitempty"`
}

// snapshot is what a transaction read about one session.
type snapshot struct {
	rec       *record // nil when the session does not exist
	tokenHash string  // hash of the current token, "" if none
}

// change is one session's part of a transaction: the record before (nil
// when new) and after, the events to append and the token to issue.
type change struct {
	old, new  *record
	oldToken  string // token hash to revoke
	newToken  string // token hash to store ("" keeps or drops, see write)
	events    []string
	refActive bool // the ref key points at this session afterwards
	refOwned  bool // the ref key pointed at this session before
}

// maxTxAttempts bounds the optimistic retries of one operation. Reaching it
// means dozens of writers raced on one session at the same instant.
const maxTxAttempts = 100

// ErrBusy is returned when a session changed under an operation more often
// than maxTxAttempts; the caller may retry.
var ErrBusy = errors.New("session is busy, retry")

// atomically runs read under WATCH on keys and commits the changes it
// returns in one MULTI/EXEC, retrying from the read when a watched key
// changed meanwhile. Each attempt reads the clock once: read decides and
// write records at that one instant, so a change's updated_at and its
// events' timestamps agree.
func (s *Service) atomically(ctx context.Context, keys []string, read func(tx *redis.Tx, now time.Time) ([]*change, error)) error {
	for attempt := 0; attempt < maxTxAttempts; attempt++ {
		err := s.rdb.Watch(ctx, func(tx *redis.Tx) error {
			now := s.now()
			changes, err := read(tx, now)
			if err != nil {
				return err
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				for _, c := range changes {
					if err := s.write(ctx, p, c, now); err != nil {
						return err
					}
				}
				return nil
			})
			if err == nil {
				for _, c := range changes {
					s.afterCommit(ctx, c)
				}
			}
			return err
		}, keys...)
		if !errors.Is(err, redis.TxFailedErr) {
			return err
		}
		// Someone else changed the session: back off a little and read again.
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(mrand.IntN(2000)+100) * time.Microsecond):
		}
	}
	return ErrBusy
}

// load reads a session (deleted ones are not found) and its token hash.
func (s *Service) load(ctx context.Context, c redis.Cmdable, id string) (snapshot, error) {
	vals, err := c.MGet(ctx, sessionKey(id), piiKey(id)).Result()
	if err != nil {
		return snapshot{}, fmt.Errorf("load session: %w", err)
	}
	raw, ok := vals[0].(string)
	if !ok {
		return snapshot{}, ErrNotFound
	}
	rec, err := decodeRecord(raw)
	if err != nil {
		return snapshot{}, err
	}
	if rec.DeletedAt != nil {
		return snapshot{}, ErrNotFound
	}
	if p, ok := vals[1].(string); ok {
		var pii personal
		if err := json.Unmarshal([]byte(p), &pii); err != nil {
			return snapshot{}, fmt.Errorf("load session %s personal data: %w", id, err)
		}
		rec.Person, rec.Metadata = pii.Person, pii.Metadata
	}
	return snapshot{rec: rec, tokenHash: rec.TokenHash}, nil
}

// decodeRecord decodes a stored session record.
func decodeRecord(raw string) (*record, error) {
	r := new(record)
	if err := json.Unmarshal([]byte(raw), r); err != nil {
		return nil, fmt.Errorf("decode session record: %w", err)
	}
	if r.Tags == nil {
		r.Tags = []string{}
	}
	return r, nil
}

// clone returns a deep enough copy of r for a change to edit.
func (r *record) clone() *record {
	c := *r
	c.Tags = append([]string{}, r.Tags...)
	if r.Decision != nil {
		d := *r.Decision
		c.Decision = &d
	}
	return &c
}

// purgeAt is when the session's data leaves Redis: PurgeAfter after a
// delete, otherwise PurgeAfter after its retention ends.
func (s *Service) purgeAt(r *record) time.Time {
	if r.DeletedAt != nil {
		return r.DeletedAt.Add(s.cfg.PurgeAfter)
	}
	return r.RetainFrom.Add(s.cfg.Retention + s.cfg.PurgeAfter)
}

// setUntil queues SET key value with a TTL that ends at the instant at of
// the injected clock. The TTL is sent relative (at - now), so it holds
// whatever Redis's own clock says; a key whose time has passed is deleted.
func setUntil(ctx context.Context, p redis.Pipeliner, key string, value any, now, at time.Time) {
	d := at.Sub(now)
	if d < time.Millisecond {
		p.Del(ctx, key)
		return
	}
	p.Set(ctx, key, value, d)
}

// write queues in p everything that makes c true in Redis.
func (s *Service) write(ctx context.Context, p redis.Pipeliner, c *change, now time.Time) error {
	r := c.new
	id := r.ID
	r.Version++
	member := indexMember(&r.Session)

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
	minID := strconv.FormatInt(now.Add(-s.cfg.EventsRetention).UnixMilli(), 10)
	for _, typ := range c.events {
		r.Seq++
		ev, err := newEvent(typ, r, now)
		if err != nil {
			return err
		}
		p.XAdd(ctx, &redis.XAddArgs{
			Stream: OutboxKey,
			MinID:  minID,
			Approx: true,
			Values: ev.streamValues(),
		})
	}

	purge := s.purgeAt(r)
	stored := r.clone()
	stored.Person, stored.Metadata = nil, nil
	body, err := json.Marshal(stored)
	if err != nil {
		return fmt.Errorf("encode session %s: %w", id, err)
	}
	setUntil(ctx, p, sessionKey(id), body, now, purge)

	if r.DeletedAt == nil && r.RedactedAt == nil && (len(r.Person) > 0 || len(r.Metadata) > 0) {
		pii, err := json.Marshal(personal{Person: r.Person, Metadata: r.Metadata})
		if err != nil {
			return fmt.Errorf("encode session %s personal data: %w", id, err)
		}
		setUntil(ctx, p, piiKey(id), pii, now, r.RetainFrom.Add(s.cfg.Retention))
	} else {
		p.Del(ctx, piiKey(id))
	}

	// Indexes.
	switch {
	case r.DeletedAt != nil:
		p.ZRem(ctx, allIndexKey, member)
		p.ZRem(ctx, refIndexKey(r.RefID), member)
		p.ZRem(ctx, statusIndexKey(r.Status), member)
		if c.old != nil && c.old.Status != r.Status {
			p.ZRem(ctx, statusIndexKey(c.old.Status), member)
		}
	default:
		if c.old == nil {
			p.ZAdd(ctx, allIndexKey, redis.Z{Member: member})
			p.ZAdd(ctx, refIndexKey(r.RefID), redis.Z{Member: member})
		} else if c.old.Status != r.Status {
			p.ZRem(ctx, statusIndexKey(c.old.Status), member)
		}
		p.ZAdd(ctx, statusIndexKey(r.Status), redis.Z{Member: member})
	}
	switch {
	case c.refActive:
		setUntil(ctx, p, refKey(r.RefID), id, now, purge)
	case c.refOwned:
		p.Del(ctx, refKey(r.RefID))
	}

	// Due indexes.
	if r.DeletedAt == nil && r.Status.Pending() && r.ExpiresAt != nil {
		p.ZAdd(ctx, ExpireDueKey, redis.Z{Score: float64(r.ExpiresAt.UnixMilli()), Member: id})
	} else {
		p.ZRem(ctx, ExpireDueKey, id)
	}
	if r.DeletedAt == nil && r.Status.Terminal() && r.RedactedAt == nil {
		p.ZAdd(ctx, RedactDueKey, redis.Z{Score: float64(r.RetainFrom.Add(s.cfg.Retention).UnixMilli()), Member: id})
	} else {
		p.ZRem(ctx, RedactDueKey, id)
	}
	p.ZAdd(ctx, PurgeDueKey, redis.Z{Score: float64(purge.UnixMilli()), Member: id})

	if revoke && c.oldToken != "" {
		p.Del(ctx, tokenKey(c.oldToken))
	}
	if c.newToken != "" {
		setUntil(ctx, p, tokenKey(c.newToken), id, now, r.TokenExpiresAt.Time)
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
	if len(c.events) > 0 {
		s.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "session changed",
			slog.String("session_id", r.ID), slog.String("from", string(from)),
			slog.String("to", string(r.Status)), slog.Any("events", c.events),
			slog.Int64("version", r.Version))
	}
	if s.cfg.Timer == nil {
		return
	}
	if r.DeletedAt == nil && r.Status.Pending() && r.ExpiresAt != nil {
		s.cfg.Timer.Schedule(ctx, Work{Kind: WorkExpire, SessionID: r.ID, Version: r.Version, At: r.ExpiresAt.Time})
	}
	if r.DeletedAt == nil && r.Status.Terminal() && r.RedactedAt == nil && (c.old == nil || !c.old.Status.Terminal()) {
		s.cfg.Timer.Schedule(ctx, Work{Kind: WorkRedact, SessionID: r.ID, Version: r.Version, At: r.RetainFrom.Add(s.cfg.Retention)})
	}
	if r.DeletedAt != nil {
		s.cfg.Timer.Schedule(ctx, Work{Kind: WorkPurge, SessionID: r.ID, Version: r.Version, At: s.purgeAt(r)})
	}
}

// issueToken gives the session of c a fresh token that expires TokenTTL
// after now, and returns it; c keeps only its hash.
func (s *Service) issueToken(c *change, now time.Time) string {
	token, hash := newToken()
	c.newToken = hash
	c.new.TokenExpiresAt = deadline(now.Add(s.cfg.TokenTTL)).Ptr()
	return token
}

// newToken returns a fresh opaque token and the hash that is stored.
func newToken() (token, hash string) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("crypto/rand failed: " + err.Error()) // cannot happen on supported platforms
	}
	token = "vst_" + base64.RawURLEncoding.EncodeToString(b[:])
	return token, hashToken(token)
}

func hashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}
