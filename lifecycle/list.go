package lifecycle

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"regexp"
	"time"

	"github.com/redis/go-redis/v9"
)

// ListQuery selects sessions for List.
type ListQuery struct {
	RefID  string
	Status Status // "" for any
	Limit  int    // 1..100; 0 means 20
	Cursor string // from a previous page's NextCursor
}

// Page is one page of List, newest first.
type Page struct {
	Sessions   []Session `json:"sessions"`
	NextCursor *string   `json:"next_cursor"`
}

// Limits of List.
const (
	DefaultListLimit = 20
	MaxListLimit     = 100
)

var memberRE = regexp.MustCompile(`^[0-9]{13}:[0-9a-f-]{36}$`)

// List returns sessions newest first, filtered by ref_id and/or status. The
// cursor is a position in a stable order (created time, then id), so pages
// neither skip nor repeat sessions while new ones are created.
func (s *Service) List(ctx context.Context, q ListQuery) (*Page, error) {
	if q.Limit == 0 {
		q.Limit = DefaultListLimit
	}
	if q.Limit < 1 || q.Limit > MaxListLimit {
		return nil, invalid("limit", fmt.Sprintf("must be between 1 and %d", MaxListLimit))
	}
	if q.Status != "" && !q.Status.Valid() {
		return nil, invalid("status", "unknown status")
	}
	if err := checkName("ref_id", q.RefID, false); err != nil {
		return nil, err
	}
	max := "+"
	if q.Cursor != "" {
		b, err := base64.RawURLEncoding.DecodeString(q.Cursor)
		if err != nil || !memberRE.Match(b) {
			return nil, invalid("cursor", "must be a cursor from a previous page")
		}
		max = "(" + string(b)
	}
	key := allIndexKey
	switch {
	case q.RefID != "":
		key = refIndexKey(q.RefID)
	case q.Status != "":
		key = statusIndexKey(q.Status)
	}
	now := s.now()
	if q.RefID == "" && (q.Status == StatusExpired || q.Status == StatusAbandoned) {
		// Sessions past their time limit still sit in their pending
		// status's index until something expires them; do it now, so the
		// index holds every session that reads as expired or abandoned.
		if err := s.expireOverdue(ctx, now); err != nil {
			return nil, err
		}
	}
	page := &Page{Sessions: []Session{}}
	// Read in batches until the page is full; a filter on both ref_id and
	// status may skip members, a ref_id index is small.
	batch := int64(q.Limit + 1)
	for {
		members, err := s.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{
			Key: key, Start: max, Stop: "-", ByLex: true, Rev: true, Count: batch,
		}).Result()
		if err != nil {
			return nil, fmt.Errorf("list sessions: %w", err)
		}
		if len(members) == 0 {
			return page, s.fillPersonal(ctx, page.Sessions)
		}
		keys := make([]string, len(members))
		for i, m := range members {
			keys[i] = sessionKey(memberID(m))
		}
		vals, err := s.rdb.MGet(ctx, keys...).Result()
		if err != nil {
			return nil, fmt.Errorf("list sessions: %w", err)
		}
		for i, v := range vals {
			raw, ok := v.(string)
			if !ok {
				// Expired by its TTL while no purge ran: drop the stale member.
				s.rdb.ZRem(ctx, key, members[i])
				continue
			}
			r, err := decodeRecord(raw)
			if err != nil {
				return nil, fmt.Errorf("list sessions: %w", err)
			}
			if r.DeletedAt != nil {
				continue
			}
			if len(page.Sessions) == q.Limit {
				cur := base64.RawURLEncoding.EncodeToString([]byte(indexMember(&page.Sessions[q.Limit-1])))
				page.NextCursor = &cur
				return page, s.fillPersonal(ctx, page.Sessions)
			}
			if overdue(r, now) {
				got, err := s.Get(ctx, r.ID)
				if err != nil {
					continue // deleted meanwhile
				}
				r.Session = *got
			}
			if q.Status != "" && r.Status != q.Status {
				continue
			}
			page.Sessions = append(page.Sessions, r.Session)
		}
		max = "(" + members[len(members)-1]
	}
}

// maxCatchUp bounds the overdue sessions one List expires before it reads;
// past it, the scheduler's sweep is far behind and List shows what the
// indexes hold.
const maxCatchUp = 1000

// expireOverdue expires the sessions whose time limit has passed at now.
func (s *Service) expireOverdue(ctx context.Context, now time.Time) error {
	ids, err := s.Due(ctx, WorkExpire, now, maxCatchUp)
	if err != nil {
		return fmt.Errorf("list sessions: %w", err)
	}
	for _, id := range ids {
		if _, err := s.ExpireDue(ctx, id); err != nil {
			return fmt.Errorf("list sessions: %w", err)
		}
	}
	return nil
}

// fillPersonal fills in the personal fields of sessions, in one round trip.
func (s *Service) fillPersonal(ctx context.Context, sessions []Session) error {
	if len(sessions) == 0 {
		return nil
	}
	keys := make([]string, len(sessions))
	for i := range sessions {
		keys[i] = piiKey(sessions[i].ID)
	}
	vals, err := s.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return fmt.Errorf("load personal data: %w", err)
	}
	for i, v := range vals {
		raw, ok := v.(string)
		if !ok {
			continue
		}
		var p personal
		if err := json.Unmarshal([]byte(raw), &p); err != nil {
			return fmt.Errorf("decode personal data of %s: %w", sessions[i].ID, err)
		}
		sessions[i].Person, sessions[i].Metadata = p.Person, p.Metadata
	}
	return nil
}
